#!/usr/bin/python3
"""check_completion.py — the bash completion (packaging/kjobs.bash) offers exactly the commands
`kjobs --help` lists, dlq's actions as `kjobs dlq --help` names them, and for every command the
options its `kjobs <command> --help` names (an option may instead be offered at the top level,
like `version`'s --version/-V), and no option the help does not name (besides --help). A command
or option added to kjobs without completion fails here. The completion runs in a real bash.

Usage: check_completion.py COMPLETION_FILE KJOBS_BINARY"""
import re
import subprocess
import sys

OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z-]*|-[a-zA-Z])(?![\w-])")


def complete(script, words):
    """COMPREPLY for the command line `words` (the last one is being completed)."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    p = subprocess.run(["bash", "--norc", "--noprofile", "-c",
                        f'source "$1"; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; '
                        'COMPREPLY=(); _kjobs; printf "%s\\n" "${COMPREPLY[@]}"', "x", script],
                       capture_output=True, text=True, check=True)
    return {line for line in p.stdout.splitlines() if line}


def help_text(kjobs, *args):
    p = subprocess.run([kjobs, *args], capture_output=True, text=True)
    return p.stdout + p.stderr


def main():
    script, kjobs = sys.argv[1], sys.argv[2]
    failures = []
    top = help_text(kjobs, "--help")
    block = top.split("Commands:", 1)[1].split("\n\n", 1)[0]
    commands = {line.split()[0] for line in block.splitlines() if line.strip()}
    if len(commands) < 5:
        sys.exit(f"check_completion: cannot read the commands of kjobs --help:\n{top}")
    offered = complete(script, ["kjobs", ""])
    if offered != commands:
        failures.append(f"commands: completion offers {sorted(offered)}, kjobs --help lists {sorted(commands)}")
    top_opts = complete(script, ["kjobs", "-"])
    for c in sorted(commands - {"help"}):
        text = help_text(kjobs, c, "--help")
        named = set(OPTION.findall(text))
        if c == "dlq":
            actions = set(re.findall(r"kjobs dlq (\w+)", text))
            got = complete(script, ["kjobs", "dlq", ""])
            if got != actions or not actions:
                failures.append(f"dlq actions: completion offers {sorted(got)}, help names {sorted(actions)}")
            opts = set().union(*(complete(script, ["kjobs", "dlq", a, "-"]) for a in actions))
        else:
            opts = complete(script, ["kjobs", c, "-"])
        missing = named - opts - top_opts
        extra = opts - named - {"--help"}
        if missing:
            failures.append(f"{c}: options in `kjobs {c} --help` not completed: {sorted(missing)}")
        if extra:
            failures.append(f"{c}: completion offers options `kjobs {c} --help` does not name: {sorted(extra)}")
        print(f"{c}: {len(opts)} options completed, {len(named)} named in its help")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    print(f"check_completion: {len(commands)} commands and their options match kjobs --help")


if __name__ == "__main__":
    main()
