#!/usr/bin/python3
"""prom_parse.py — check Prometheus text exposition with the reference Python parser.

Reads exposition text (format 0.0.4) on stdin, parses it with
prometheus_client.parser.text_string_to_metric_families (Debian's python3-prometheus-client: run
it with /usr/bin/python3), runs structural checks the lenient parser does not, checks the
expectations given as arguments, and prints a JSON summary on stdout. Exit 0 when everything
holds; 1 with one line per problem on stderr otherwise; 2 on usage errors.

Structural checks: every sample belongs to a family with a # TYPE of counter, gauge or histogram;
counter names end in _total; no sample (name + label set) appears twice; histogram series have increasing `le`
bounds ending in +Inf, cumulative counts, +Inf == _count, and a _sum; with --prefix, every
family name starts with it.

Expectations (each one argument):
  NAME{l1="v1",l2="v2"}=VALUE   a sample with exactly these labels has this value
  NAME=VALUE                    same, with no labels
  !NAME{...}                    no sample with exactly these labels exists
  --type FAMILY=TYPE            the family (as declared in # TYPE) has this type
  --prefix P                    every family name starts with P
Label values in expectations use the exposition escapes (\\\\, \\", \\n).
"""
import json
import math
import re
import sys

from prometheus_client.parser import text_string_to_metric_families

SELECTOR = re.compile(r'^(!?)([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?(?:=(.+))?$', re.S)


def parse_labels(text):
    """Parse '{a="x",b="y"}' (exposition escapes) into a dict."""
    labels = {}
    if not text:
        return labels
    body, i = text[1:-1], 0
    while i < len(body):
        m = re.match(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"', body[i:])
        if not m:
            raise ValueError("bad label list: " + text)
        name, i, value = m.group(1), i + m.end(), []
        while True:
            if i >= len(body):
                raise ValueError("unterminated label value: " + text)
            c = body[i]
            if c == '\\' and i + 1 < len(body):
                value.append({'n': '\n', '\\': '\\', '"': '"'}.get(body[i + 1], '\\' + body[i + 1]))
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                value.append(c)
                i += 1
        labels[name] = ''.join(value)
        m = re.match(r'\s*,?\s*', body[i:])
        i += m.end()
    return labels


def parse_value(text):
    return float(text)  # accepts +Inf, -Inf, NaN as the exposition spells them


def structural_checks(text, families, prefix, problems):
    declared = {}
    for line in text.splitlines():
        if line.startswith('# TYPE '):
            parts = line.split()
            if len(parts) != 4:
                problems.append('malformed TYPE line: ' + line)
                continue
            if parts[2] in declared:
                problems.append('family declared twice: ' + parts[2])
            declared[parts[2]] = parts[3]
    # The parser renames counter samples to end in _total, so check the raw text for that.
    for name, typ in declared.items():
        if typ == 'counter' and not name.endswith('_total'):
            problems.append('counter %s does not end in _total' % name)
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        name = re.match(r'[a-zA-Z_:][a-zA-Z0-9_:]*', line)
        name = name.group(0) if name else line
        owners = [name] + [name[:-len(sfx)] for sfx in ('_bucket', '_sum', '_count')
                           if name.endswith(sfx)]
        if not any(o in declared for o in owners):
            problems.append('sample %s has no # TYPE' % name)
    seen = set()
    for fam in families:
        if fam.type not in ('counter', 'gauge', 'histogram'):
            problems.append('family %s has type %s' % (fam.name, fam.type))
        if prefix and not fam.name.startswith(prefix):
            problems.append('family %s lacks prefix %s' % (fam.name, prefix))
        series = {}
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in seen:
                problems.append('duplicate sample %s %s' % (s.name, s.labels))
            seen.add(key)
            if fam.type == 'counter' and not s.name.endswith('_total'):
                problems.append('counter sample %s does not end in _total' % s.name)
            if fam.type == 'histogram':
                base = tuple(sorted((k, v) for k, v in s.labels.items() if k != 'le'))
                series.setdefault(base, {'buckets': [], 'sum': None, 'count': None})
                entry = series[base]
                if s.name == fam.name + '_bucket':
                    entry['buckets'].append((float(s.labels['le']), s.value))
                elif s.name == fam.name + '_sum':
                    entry['sum'] = s.value
                elif s.name == fam.name + '_count':
                    entry['count'] = s.value
                else:
                    problems.append('unexpected histogram sample ' + s.name)
        for base, entry in series.items():
            where = '%s%s' % (fam.name, dict(base))
            bounds = [b for b, _ in entry['buckets']]
            counts = [c for _, c in entry['buckets']]
            if not bounds or bounds[-1] != math.inf:
                problems.append(where + ': no +Inf bucket last')
            if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
                problems.append(where + ': le bounds not strictly increasing')
            if counts != sorted(counts):
                problems.append(where + ': bucket counts not cumulative')
            if entry['count'] is None or entry['sum'] is None:
                problems.append(where + ': missing _count or _sum')
            elif counts and counts[-1] != entry['count']:
                problems.append(where + ': +Inf bucket %s != _count %s' % (counts[-1], entry['count']))
    return declared


def main(argv):
    prefix, expectations, types = None, [], []
    args = iter(argv)
    for a in args:
        if a == '--prefix':
            prefix = next(args, None)
        elif a == '--type':
            spec = next(args, '')
            if '=' not in spec:
                print('usage: --type FAMILY=TYPE', file=sys.stderr)
                return 2
            types.append(spec.split('=', 1))
        else:
            m = SELECTOR.match(a)
            if not m or (m.group(1) == '') == (m.group(4) is None):
                print('bad expectation: ' + a, file=sys.stderr)
                return 2
            try:
                labels = parse_labels(m.group(3))
            except ValueError as e:
                print(str(e), file=sys.stderr)
                return 2
            expectations.append((m.group(1) == '!', m.group(2), labels, m.group(4), a))

    text = sys.stdin.read()
    problems = []
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and friends on bad input
        print('parse error: %s' % e, file=sys.stderr)
        return 1
    declared = structural_checks(text, families, prefix, problems)

    samples = {}
    for fam in families:
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    for absent, name, labels, value, spec in expectations:
        key = (name, tuple(sorted(labels.items())))
        if absent:
            if key in samples:
                problems.append('%s: present with value %s' % (spec, samples[key]))
        elif key not in samples:
            problems.append('%s: no such sample' % spec)
        else:
            want, got = parse_value(value), samples[key]
            same = (math.isnan(want) and math.isnan(got)) or want == got or \
                (math.isfinite(want) and abs(want - got) <= 1e-9 * max(1.0, abs(want)))
            if not same:
                problems.append('%s: value is %r' % (spec, got))
    for fam_name, want in types:
        if declared.get(fam_name) != want:
            problems.append('family %s: type %s, want %s' % (fam_name, declared.get(fam_name), want))

    summary = {fam.name: {'type': fam.type, 'help': fam.documentation,
                          'samples': [[s.name, s.labels, s.value if math.isfinite(s.value)
                                       else str(s.value)] for s in fam.samples]}
               for fam in families}
    print(json.dumps({'families': summary, 'ok': not problems}, sort_keys=True))
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
