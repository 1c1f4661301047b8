# kjobs.bash — bash completion for the kjobs command: its subcommands, each subcommand's
# options (as `kjobs <command> --help` lists them), dlq's actions, and the values of the options
# that take a fixed set or a file. Installed as share/bash-completion/completions/kjobs, where
# bash-completion loads it on first use; or `source` it. Plain bash (compgen), so it works without
# the bash-completion package too. tests/install/check_completion.sh compares it with
# `kjobs --help` and each `kjobs <command> --help`: a command or option without completion fails.

_kjobs() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local commands="run enqueue peek dlq lag topics ui pause resume pauses broker cron schema version help"
    local conn="-c -b -X"
    # the command is always the first word (`kjobs <command> [options]`), dlq's action the second
    local cmd=""
    ((COMP_CWORD > 1)) && cmd=${COMP_WORDS[1]}

    # values of options that take one
    case $prev in
        -c | --bootstrap-file)
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --group-protocols)
            COMPREPLY=($(compgen -W "classic classic,consumer" -- "$cur")); return ;;
        --encoding)
            COMPREPLY=($(compgen -W "binary single-object" -- "$cur")); return ;;
        --class)
            COMPREPLY=($(compgen -W "retryable permanent decode unknown-type timeout invalid-header crash-loop" -- "$cur")); return ;;
        -X)
            COMPREPLY=($(compgen -W "security.protocol= sasl.mechanism= ssl.ca.location= fetch.wait.max.ms=" -- "$cur"))
            compopt -o nospace 2>/dev/null; return ;;
        -b | -G | --listen | --topic | --reason | --type | --key | --meta | --count | --partitions | --brokers | --timeout | --id | --delay | --at | --from | -n)
            return ;;
        --tz)
            COMPREPLY=($(compgen -W "UTC Europe/ America/ Asia/ Australia/" -- "$cur"))
            compopt -o nospace 2>/dev/null; return ;;
        --payload)
            [[ $cur == @* ]] && COMPREPLY=($(compgen -f -P @ -- "${cur#@}")); return ;;
    esac

    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "--help -h --version -V" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi

    local opts=""
    case $cmd in
        run) opts="$conn -G --embedded --partitions --check-config" ;;
        enqueue) opts="$conn --topic --type --key --payload --meta --count --encoding --delay --at" ;;
        peek) opts="$conn --topic --count --from-beginning --timeout" ;;
        dlq)
            if ((COMP_CWORD == 2)) && [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "list show replay discard" -- "$cur")); return
            fi
            opts="$conn -G --topic --timeout"
            case ${COMP_WORDS[2]} in
                list) opts="$opts --json --type --id --class" ;;
                show) ;;
                replay) opts="$opts --type --id --class --again --dry-run" ;;
                discard) opts="$opts --type --id --class --dry-run --yes" ;;
                *) opts="$opts --json --type --id --class --again --dry-run --yes" ;;
            esac ;;
        lag) opts="$conn -G --topic --json --timeout" ;;
        topics) opts="$conn --create" ;;
        ui) opts="$conn -G --topic --listen" ;;
        pause) opts="$conn --reason --timeout" ;;
        resume) opts="$conn --breaker --timeout" ;;
        pauses) opts="$conn --json --timeout" ;;
        broker) opts="-c --brokers --partitions --bootstrap-file --group-protocols" ;;
        cron)
            if ((COMP_CWORD == 2)) && [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "next" -- "$cur")); return
            fi
            opts="--tz --from -n --ms" ;;
        schema) opts="--fingerprint --json" ;;
        version | help) opts="" ;;
        *) return ;;
    esac
    if [[ $cur == -* || -z $cur ]]; then
        COMPREPLY=($(compgen -W "$opts --help" -- "$cur"))
    fi
}
complete -F _kjobs kjobs
