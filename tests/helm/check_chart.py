#!/usr/bin/python3
"""check_chart.py — checks of the kjobs Helm chart (helm/kjobs) that need more than `helm lint`.

Modes (each one ctest, see tests/helm/CMakeLists.txt):
  render        `helm template` every value set in tests/helm/values/, parse the YAML and assert
                the facts that matter: probes and ports follow config.http.listen, the
                KJOBS_RDKAFKA_* env names are exactly the ones the config loader maps to librdkafka
                properties, kjobs.cfg parses and equals the values (types included), the
                checksum/config annotation is the hash of that file and moves with it, security
                contexts, grace > drain, PDB/HPA/KEDA/hook Job/plugin/exec wiring (KEDA: a trigger per
                ladder topic, and KEDA's replica rule never gives 0 pods while a ladder topic holds
                jobs; the user's own TriggerAuthentication), the hook Job's env/envFrom/mounts equal
                to the worker's, the NetworkPolicy's Kafka ports for each bootstrap form, object
                names for release names with and without "kjobs" (and the docs' names), the
                PrometheusRule's alerts equal to docs/operations.md and KjobsLagGrowing counting the
                main topic and no ladder topic for custom topic names, service.enabled=false
                rendering nothing that needs the Service. Every file in
                tests/helm/invalid/ must be refused with each of its `# expect:` messages (and none of its `# not:` ones). Every
                value has an @param line, a README row and a values.schema.json entry.
                config.* offers every setting of processor/config.c's table (schema, default,
                rendered file; KF_SECRET strings as Secret references, turned into env).
  check-config  feed each rendered kjobs.cfg, with the env the Deployment sets, to
                `kjobs run --check-config -c FILE`; must exit 0 (and 2 for a broken file), with
                every setting of the table from the file (secret ones from their env, hidden).
  openapi       validate every rendered manifest with validate_openapi.cjs (offline schemas).
  probes        a real `kjobs run` (embedded broker) answers every rendered httpGet probe with 200
                on the port it names, and the `helm test` pod's script passes against it (and
                fails against a server answering 503).

Needs /usr/bin/python3 with python3-yaml (Debian's), helm, and for openapi node + the npm models.
"""
import argparse
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
CHART = os.environ.get("KJOBS_CHART_DIR", os.path.join(ROOT, "helm", "kjobs"))
VALUES_DIR = os.path.join(HERE, "values")
CI_DIR = os.path.join(CHART, "ci")  # chart-testing's ci/*-values.yaml, rendered and checked too
DOCS_OPERATIONS = os.path.join(ROOT, "docs", "operations.md")
INVALID_DIR = os.path.join(HERE, "invalid")
RELEASE = "t"
CONFIG_PATH = "/etc/kjobs/config/kjobs.cfg"

# The librdkafka properties the chart sets through the environment, and the env names the config
# loader (processor/config.c: KJOBS_RDKAFKA_<PROP>, `_` for `.`) turns into them.
RDKAFKA_ENV = {
    "KJOBS_RDKAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KJOBS_RDKAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KJOBS_RDKAFKA_SASL_USERNAME": "sasl.username",
    "KJOBS_RDKAFKA_SASL_PASSWORD": "sasl.password",
    "KJOBS_RDKAFKA_SASL_OAUTHBEARER_METHOD": "sasl.oauthbearer.method",
    "KJOBS_RDKAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "sasl.oauthbearer.token.endpoint.url",
    "KJOBS_RDKAFKA_SASL_OAUTHBEARER_CLIENT_ID": "sasl.oauthbearer.client.id",
    "KJOBS_RDKAFKA_SASL_OAUTHBEARER_CLIENT_SECRET": "sasl.oauthbearer.client.secret",
    "KJOBS_RDKAFKA_SASL_OAUTHBEARER_SCOPE": "sasl.oauthbearer.scope",
    "KJOBS_RDKAFKA_SASL_OAUTHBEARER_EXTENSIONS": "sasl.oauthbearer.extensions",
    "KJOBS_RDKAFKA_SASL_KERBEROS_SERVICE_NAME": "sasl.kerberos.service.name",
    "KJOBS_RDKAFKA_SASL_KERBEROS_PRINCIPAL": "sasl.kerberos.principal",
    "KJOBS_RDKAFKA_SASL_KERBEROS_KEYTAB": "sasl.kerberos.keytab",
    "KJOBS_RDKAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "KJOBS_RDKAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "KJOBS_RDKAFKA_SSL_KEY_LOCATION": "ssl.key.location",
    "KJOBS_RDKAFKA_SSL_KEY_PASSWORD": "ssl.key.password",
}
# Env whose value is a secret: must come from a Secret (secretKeyRef), never a literal.
SECRET_ENV = {"KJOBS_RDKAFKA_SASL_PASSWORD", "KJOBS_RDKAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
              "KJOBS_RDKAFKA_SSL_KEY_PASSWORD", "KJOBS_RDKAFKA_SASL_OAUTHBEARER_CLIENT_ID"}
# Env that names a file: must be a key of a mounted Secret or ConfigMap.
FILE_ENV = {"KJOBS_RDKAFKA_SSL_CA_LOCATION", "KJOBS_RDKAFKA_SSL_CERTIFICATE_LOCATION",
            "KJOBS_RDKAFKA_SSL_KEY_LOCATION", "KJOBS_RDKAFKA_SASL_KERBEROS_KEYTAB", "KRB5_CONFIG"}
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512",
             "OAUTHBEARER": "oauthbearer", "GSSAPI": "gssapi"}
USERPASS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
    return cond


# ---------------------------------------------------------------------------------------------
# helm


def helm_template(helm, values_files=(), sets=(), chart=CHART):
    cmd = [helm, "template", RELEASE, chart, "--namespace", "jobs"]
    for f in values_files:
        cmd += ["-f", f]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def render(helm, values_files=(), sets=()):
    rc, out, err = helm_template(helm, values_files, sets)
    if rc != 0:
        raise SystemExit(f"helm template {values_files} {sets} failed:\n{err}")
    return [d for d in yaml.safe_load_all(out) if d]


def deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f) or {}


def value_sets():
    """(name, path) of every value set: tests/helm/values/NAME.yaml, then the chart's
    ci/NAME-values.yaml (chart-testing's convention) as "ci/NAME"."""
    out = [(f[:-5], os.path.join(VALUES_DIR, f)) for f in sorted(os.listdir(VALUES_DIR)) if f.endswith(".yaml")]
    if os.path.isdir(CI_DIR):
        out += [("ci/" + f[:-len("-values.yaml")], os.path.join(CI_DIR, f))
                for f in sorted(os.listdir(CI_DIR)) if f.endswith("-values.yaml")]
    return out


# ---------------------------------------------------------------------------------------------
# A small libconfig reader: enough of the grammar for what the chart writes (groups, scalars,
# arrays of scalars, comments), strict about types, so "1" and "1.0" stay int and float.

TOKEN = re.compile(r"""
    (?P<ws>\s+|\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<float>[-+]?(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?\d+[eE][-+]?\d+)
  | (?P<int>[-+]?\d+)
  | (?P<bool>(?i:true|false)\b)
  | (?P<name>[A-Za-z*][-A-Za-z0-9_*]*)
  | (?P<punct>[=:;,{}\[\]()])
""", re.X | re.S)


def libconfig_parse(text):
    toks, pos = [], 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"libconfig: bad character at offset {pos}: {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind != "ws":
            toks.append((kind, m.group()))
    i = 0

    def expect(v):
        nonlocal i
        if i >= len(toks) or toks[i][1] != v:
            raise ValueError(f"libconfig: expected {v!r} at token {i}: {toks[i:i + 3]}")
        i += 1

    def value():
        nonlocal i
        kind, v = toks[i]
        i += 1
        if kind == "str":
            s = v
            while i < len(toks) and toks[i][0] == "str":  # adjacent literals concatenate
                s = s[:-1] + toks[i][1][1:]
                i += 1
            return json.loads(s.replace("\\f", "\\u000c"))
        if kind == "int":
            return int(v)
        if kind == "float":
            return float(v)
        if kind == "bool":
            return v.lower() == "true"
        if v == "{":
            return group("}")
        if v in "[(":
            close = "]" if v == "[" else ")"
            items = []
            while toks[i][1] != close:
                items.append(value())
                if toks[i][1] == ",":
                    i += 1
            i += 1
            return items
        raise ValueError(f"libconfig: unexpected {v!r}")

    def group(close):
        nonlocal i
        out = {}
        while i < len(toks) and toks[i][1] != close:
            kind, name = toks[i]
            if kind != "name":
                raise ValueError(f"libconfig: expected a setting name, got {name!r}")
            i += 1
            if toks[i][1] not in "=:":
                raise ValueError(f"libconfig: expected = after {name}")
            i += 1
            if name in out:
                raise ValueError(f"libconfig: duplicate setting {name}")
            out[name] = value()
            if i < len(toks) and toks[i][1] in ";,":
                i += 1
        if close:
            expect(close)
        return out

    return group(None)


# ---------------------------------------------------------------------------------------------
# The settings table of processor/config.c (kj_settings[]): the one list of kjobs' settings. The
# chart's config.* must offer every row (check_config_table), and check-config mode holds this
# reading of the source to what the built kjobs prints (`run --check-config`, every key).

CONFIG_C = os.path.join(ROOT, "processor", "config.c")
# Lists of groups the table cannot hold, parsed by their own modules (processor/config_limits.c):
# the chart offers each as an array config.<name>, written to kjobs.cfg as a libconfig list.
LIST_SETTINGS = ("limits",)
C_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def settings_table(path=CONFIG_C):
    """[{key, group, name, env, type, flags}] of kj_settings[], in table order."""
    text = open(path).read()
    m = re.search(r"static const kj_setting kj_settings\[\] = \{(.*?)\n\};", text, re.S)
    if not m:
        raise SystemExit(f"{path}: kj_settings[] not found")
    rows = []
    for chunk in re.split(r"\{(?=(?:ROW|TOP)\()", m.group(1))[1:]:
        head = re.match(r'(ROW|TOP)\(([^)]*)\)', chunk)
        args = [json.loads(a) for a in C_STRING.findall(head.group(2))]
        group, name, env = (args if head.group(1) == "ROW" else [None] + args)
        body = C_STRING.sub('""', chunk[head.end():])  # field syntax only, no documentation text
        kind = re.search(r"\.type\s*=\s*(KT_\w+)", body)
        flags = re.search(r"\.flags\s*=\s*([A-Z_|\s]+?)\s*[,}]", body)
        rows.append({"key": f"{group}.{name}" if group else name, "group": group, "name": name, "env": env,
                     "type": kind.group(1) if kind else None,
                     "flags": set(re.findall(r"KF_\w+", flags.group(1))) if flags else set()})
    return rows


def is_secret_string(row):
    """A secret setting the chart takes as a Secret reference: a KF_SECRET string (a password).
    kafka.properties is KF_SECRET too, as a list whose values may be secrets: it stays in the
    ConfigMap, and validateValues refuses credential properties in it (kjobs.sensitiveProperty)."""
    return row["type"] == "KT_STRING" and "KF_SECRET" in row["flags"]


def secret_settings(values):
    """(group, name) of the config values that are Secret references ({existingSecret, key})."""
    return [(g, n) for g, grp in values["config"].items() if isinstance(grp, dict)
            for n, v in grp.items() if isinstance(v, dict) and "existingSecret" in v]


def expected_secret_env(values):
    """KJOBS_<GROUP>_<NAME> of each Secret reference that names a Secret: ("secret", name, key)."""
    return {f"KJOBS_{g}_{n}".upper(): ("secret", values["config"][g][n]["existingSecret"], values["config"][g][n]["key"])
            for g, n in secret_settings(values) if values["config"][g][n]["existingSecret"]}


def expected_cfg(values):
    """kjobs.cfg as the chart should write it, from the merged values."""
    cfg = copy.deepcopy(values["config"])
    for group, name in secret_settings(values):  # Secret references: env, never the file
        del cfg[group][name]
    if values["plugin"]["enabled"]:
        cfg["handlers"]["plugin"] = values["plugin"]["mountPath"].rstrip("/") + "/" + \
            os.path.basename(values["plugin"]["path"])
    if values["execHandler"]["enabled"]:
        cfg["handlers"]["exec"] = values["execHandler"]["command"]
    cfg["dlq"]["breaker_ratio"] = float(cfg["dlq"]["breaker_ratio"])
    if not cfg["schedule"].get("periodic"):  # written only when there are entries
        cfg["schedule"].pop("periodic", None)
    # the chart's librdkafka settings (memory.*, each when not 0) come first, so the user's win
    mem = values.get("memory") or {}
    first = [f"{name}={mem[key]}" for key, name in (("queuedMaxMessagesKbytes", "queued.max.messages.kbytes"),
                                                     ("maxPartitionFetchBytes", "max.partition.fetch.bytes"))
             if mem.get(key)]
    cfg["kafka"]["properties"] = first + list(cfg["kafka"]["properties"])
    return cfg


QUANTITY = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6,
            "G": 10**9, "T": 10**12}



def memory_bytes(quantity):
    m = re.fullmatch(r"([0-9]+)([A-Za-z]*)", str(quantity or ""))
    return int(m.group(1)) * QUANTITY[m.group(2)] if m else 0


def worst_case_bytes(values, cfg, max_pending=None):
    """The documented worst case of one pod (docs/kubernetes.md, "Memory"), computed from the
    rendered kjobs.cfg: a pod may own every main and ladder partition; each holds at most
    batch.max_pending jobs (back-pressure is per partition) and keeps alive the Fetch response
    they came in (fetch.max.bytes); librdkafka's one prefetch queue holds
    queued.max.messages.kbytes; the copies of failed jobs awaiting their acknowledgement hold at
    most batch.max_pending_bytes (headers included). Unset, the two librdkafka sizes are kjobs'
    own (processor/worker.c: a quarter of batch.max_pending_bytes, at least 1 MiB; a sixteenth,
    at least 256 KiB)."""
    pending_bytes = cfg["batch"]["max_pending_bytes"]
    props = {"queued.max.messages.kbytes": max(pending_bytes // 4 // 1024, 1024)}
    user = {}
    for p in cfg["kafka"]["properties"]:  # later ones win, as in kjobs
        name, _, v = p.partition("=")
        if name in ("queued.max.messages.kbytes", "fetch.max.bytes", "message.max.bytes"):
            user[name] = int(v)
    props.update({k: v for k, v in user.items() if k == "queued.max.messages.kbytes"})
    # the response: the user's fetch.max.bytes, else kjobs' own raised to a larger
    # message.max.bytes the user set (processor/kafka.c fetch_size_conf)
    props["fetch.max.bytes"] = user.get("fetch.max.bytes") or max(pending_bytes // 16, 262144,
                                                                  user.get("message.max.bytes", 0))
    parts = cfg["topics"]["partitions"] * (1 + len(cfg["retry"]["delays"]))
    # a chart without the memory section is judged with 4 KiB jobs (issue #10's measurement)
    mem = values.get("memory") or {"baseBytes": 64 << 20, "maxJobBytes": 4096,
                                   "jobOverheadBytes": 1024}
    pending = cfg["batch"]["max_pending"] if max_pending is None else max_pending
    return (mem["baseBytes"] + pending_bytes + props["queued.max.messages.kbytes"] * 1024 +
            parts * (pending * (mem["maxJobBytes"] + mem["jobOverheadBytes"]) + props["fetch.max.bytes"]))


def same_typed(a, b):
    """Equality that also distinguishes int from float and bool from int."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_typed(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_typed(x, y) for x, y in zip(a, b))
    return a == b


# ---------------------------------------------------------------------------------------------
# render checks


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def one(docs, kind, name=None, where=""):
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    check(len(found) == 1, f"{where}: expected one {kind} {name or ''}, found {len(found)}")
    return found[0] if found else None


def all_containers(pod_spec):
    return list(pod_spec.get("initContainers") or []) + list(pod_spec["containers"])


def ladder_topics(cfg):
    """The retry-ladder topics kjobs derives from its config (processor/topic_layout.c):
    <retry_prefix or main + ".retry."><step>, one per retry.delays entry."""
    prefix = cfg["topics"].get("retry_prefix") or cfg["topics"]["main"] + ".retry."
    return [f"{prefix}{i}" for i in range(1, len(cfg["retry"]["delays"]) + 1)]


def keda_replicas(so, lag_by_topic, partitions):
    """Pods KEDA's kafka scaler + HPA settle on for this lag, per KEDA's documented rules: the
    object is active if any trigger's lag exceeds its activationLagThreshold (else
    minReplicaCount); each trigger asks for ceil(lag / lagThreshold) pods (lag capped at
    partitions * lagThreshold unless allowIdleConsumers); the HPA takes the largest ask,
    within [max(minReplicaCount, 1), maxReplicaCount]."""
    active, want = False, 0
    for tr in so["triggers"]:
        md = tr["metadata"]
        lag, threshold = lag_by_topic.get(md["topic"], 0), int(md["lagThreshold"])
        active = active or lag > int(md["activationLagThreshold"])
        if md.get("allowIdleConsumers") != "true":
            lag = min(lag, partitions * threshold)
        want = max(want, -(-lag // threshold))
    if not active:
        return so["minReplicaCount"]
    return min(max(want, so["minReplicaCount"], 1), so["maxReplicaCount"])


def check_security(where, pod_spec):
    psc = pod_spec.get("securityContext") or {}
    check(psc.get("runAsNonRoot") is True, f"{where}: pod securityContext.runAsNonRoot is not true")
    check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
          f"{where}: pod seccompProfile is not RuntimeDefault")
    check(isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0,
          f"{where}: pod runAsUser must be a non-zero UID (runAsNonRoot needs a numeric user)")
    for c in all_containers(pod_spec):
        sc = c.get("securityContext") or {}
        cw = f"{where}: container {c['name']}"
        check(sc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem is not true")
        check(sc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation is not false")
        check(sc.get("runAsNonRoot") is True, f"{cw}: runAsNonRoot is not true")
        check((sc.get("capabilities") or {}).get("drop") == ["ALL"], f"{cw}: capabilities.drop is not [ALL]")
        check(sc.get("capabilities", {}).get("add") in (None, []), f"{cw}: adds capabilities")
        check((sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{cw}: seccomp is not RuntimeDefault")


def rdkafka_env(container):
    return {e["name"]: e for e in container.get("env") or []
            if e["name"].startswith("KJOBS_RDKAFKA_") or e["name"] == "KRB5_CONFIG"}


def expected_auth_env(values):
    """The credential env the values ask for, as {name: source}: a source is ("value", text),
    ("secret", name, key) or ("file", "secret"|"configMap", name, key) — what the pod must get."""
    a = values["kafkaAuth"]
    mech, want = a["saslMechanism"], {}
    if a["securityProtocol"]:
        want["KJOBS_RDKAFKA_SECURITY_PROTOCOL"] = ("value", a["securityProtocol"])
    if mech:
        want["KJOBS_RDKAFKA_SASL_MECHANISM"] = ("value", mech)
    if mech in USERPASS:
        want["KJOBS_RDKAFKA_SASL_USERNAME"] = (("value", a["username"]) if a["username"]
                                               else ("secret", a["existingSecret"], a["usernameKey"]))
        want["KJOBS_RDKAFKA_SASL_PASSWORD"] = ("secret", a["existingSecret"], a["passwordKey"])
    if mech == "OAUTHBEARER":
        o = a["oauthbearer"]
        want["KJOBS_RDKAFKA_SASL_OAUTHBEARER_METHOD"] = ("value", "oidc")
        want["KJOBS_RDKAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL"] = ("value", o["tokenEndpointUrl"])
        want["KJOBS_RDKAFKA_SASL_OAUTHBEARER_CLIENT_ID"] = ("secret", o["existingSecret"], o["clientIdKey"])
        want["KJOBS_RDKAFKA_SASL_OAUTHBEARER_CLIENT_SECRET"] = ("secret", o["existingSecret"], o["clientSecretKey"])
        if o["scopes"]:
            want["KJOBS_RDKAFKA_SASL_OAUTHBEARER_SCOPE"] = ("value", " ".join(o["scopes"]))
        if o["extensions"]:
            want["KJOBS_RDKAFKA_SASL_OAUTHBEARER_EXTENSIONS"] = (
                "value", ",".join(f"{k}={v}" for k, v in sorted(o["extensions"].items())))
    if mech == "GSSAPI":
        g = a["gssapi"]
        want["KJOBS_RDKAFKA_SASL_KERBEROS_SERVICE_NAME"] = ("value", g["serviceName"])
        want["KJOBS_RDKAFKA_SASL_KERBEROS_PRINCIPAL"] = ("value", g["principal"])
        want["KJOBS_RDKAFKA_SASL_KERBEROS_KEYTAB"] = ("file", "secret", g["keytabSecret"], g["keytabKey"])
        want["KRB5_CONFIG"] = ("file", "configMap", g["krb5ConfigMap"], g["krb5ConfigKey"])
    if a["ca"]["existingSecret"]:
        want["KJOBS_RDKAFKA_SSL_CA_LOCATION"] = ("file", "secret", a["ca"]["existingSecret"], a["ca"]["key"])
    cc = a["clientCert"]
    if cc["existingSecret"]:
        want["KJOBS_RDKAFKA_SSL_CERTIFICATE_LOCATION"] = ("file", "secret", cc["existingSecret"], cc["certKey"])
        want["KJOBS_RDKAFKA_SSL_KEY_LOCATION"] = ("file", "secret", cc["existingSecret"], cc["keyKey"])
        if cc["keyPasswordKey"]:
            want["KJOBS_RDKAFKA_SSL_KEY_PASSWORD"] = ("secret", cc["existingSecret"], cc["keyPasswordKey"])
    return want


def mounted_file_source(path, container, pod_spec):
    """("file", "secret"|"configMap", name, key) of the read-only mounted volume item at path."""
    vols = {v["name"]: v for v in pod_spec.get("volumes") or []}
    for m in container.get("volumeMounts") or []:
        vol = vols.get(m["name"], {})
        sources = [s for s in (vol.get("projected") or {}).get("sources") or []]
        if vol.get("secret"):
            sources.append({"secret": {"name": vol["secret"]["secretName"], "items": vol["secret"].get("items")}})
        if vol.get("configMap"):
            sources.append({"configMap": vol["configMap"]})
        for src in sources:
            for kind in ("secret", "configMap"):
                ref = src.get(kind)
                for item in (ref or {}).get("items") or []:
                    if os.path.join(m["mountPath"], item["path"]) == path and m.get("readOnly"):
                        return ("file", kind, ref["name"], item["key"])
    return None


def pod_auth_sources(container, pod_spec):
    """The credential env the pod actually gets, resolved to the same source tuples."""
    out = {}
    for name, e in rdkafka_env(container).items():
        if "value" in e and name in FILE_ENV:
            out[name] = mounted_file_source(e["value"], container, pod_spec) or ("unmounted", e["value"])
        elif "value" in e:
            out[name] = ("value", e["value"])
        else:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef") or {}
            out[name] = ("secret", ref.get("name"), ref.get("key"))
    return out


def check_env(where, container, pod_spec, values):
    env = rdkafka_env(container)
    for name in env:
        if name == "KRB5_CONFIG":
            continue
        # The loader's mapping: strip the prefix, `_` → `.`, lower case. It must land on a real
        # librdkafka property (the ones in RDKAFKA_ENV), or kjobs would reject it at start-up.
        prop = name[len("KJOBS_RDKAFKA_"):].lower().replace("_", ".")
        check(RDKAFKA_ENV.get(name) == prop, f"{where}: env {name} maps to {prop!r}, not a property the chart means")
    got, want = pod_auth_sources(container, pod_spec), expected_auth_env(values)
    for e in values["extraEnv"]:  # the user's own (auth outside kafkaAuth): not the chart's to check
        got.pop(e["name"], None)
    check(got == want, f"{where}: credential env\n  got  {got}\n  want {want}")
    for name in SECRET_ENV & set(env):
        check("value" not in env[name], f"{where}: {name} has a literal value (secrets must come from a Secret)")
    # No secret may reach the environment as a literal.
    for e in container.get("env") or []:
        if re.search(r"PASSWORD|SECRET", e["name"]) and "value" in e:
            check(False, f"{where}: env {e['name']} carries a literal value")
    # A private key or keytab is not world-readable.
    for name in ("KJOBS_RDKAFKA_SSL_KEY_LOCATION", "KJOBS_RDKAFKA_SASL_KERBEROS_KEYTAB"):
        src = got.get(name)
        if src and src[0] == "file":
            mode = None
            for v in pod_spec.get("volumes") or []:
                for kind in ("secret", "projected"):
                    if v.get(kind) and any(src[2] in (s.get("secretName"), (s.get("secret") or {}).get("name"))
                                           for s in [v[kind]] + list(v[kind].get("sources") or [])):
                        mode = v[kind].get("defaultMode")
            check(mode is not None and mode & 0o007 == 0, f"{where}: {name}'s file mode {mode} lets others read it")


def keda_auth_sources(ta, docs):
    """KEDA's auth parameters, resolved to the pod's source tuples: a Secret key, a mounted
    file's Secret/ConfigMap key (KEDA reads the content), or a value from the chart's own
    keda-auth ConfigMap."""
    cms = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    out = {}
    for r in ta["spec"].get("secretTargetRef") or []:
        out[r["parameter"]] = ("secret", r["name"], r["key"])
    for r in ta["spec"].get("configMapTargetRef") or []:
        cm = cms.get(r["name"])
        if cm is not None and r["name"] == f"{RELEASE}-kjobs-keda-auth":  # the chart's own values
            out[r["parameter"]] = ("value", (cm.get("data") or {}).get(r["key"]))
        else:
            out[r["parameter"]] = ("file", "configMap", r["name"], r["key"])
    return out


def check_keda_auth(where, ta, docs, pod_src, values):
    """KEDA authenticates with the pod's credentials: every KEDA parameter maps to the same
    Secret key, file or value as the librdkafka property it stands for, and nothing else."""
    keda = keda_auth_sources(ta, docs)
    file_as_secret = lambda s: ("secret", s[2], s[3]) if s and s[0] == "file" and s[1] == "secret" else s
    want = {}
    mech = values["kafkaAuth"]["saslMechanism"]
    pairs = [("KJOBS_RDKAFKA_SSL_CA_LOCATION", "ca"), ("KJOBS_RDKAFKA_SSL_CERTIFICATE_LOCATION", "cert"),
             ("KJOBS_RDKAFKA_SSL_KEY_LOCATION", "key"), ("KJOBS_RDKAFKA_SSL_KEY_PASSWORD", "keyPassword")]
    if mech in USERPASS:
        pairs += [("KJOBS_RDKAFKA_SASL_USERNAME", "username"), ("KJOBS_RDKAFKA_SASL_PASSWORD", "password")]
    if mech == "OAUTHBEARER":
        pairs += [("KJOBS_RDKAFKA_SASL_OAUTHBEARER_CLIENT_ID", "username"),
                  ("KJOBS_RDKAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", "password"),
                  ("KJOBS_RDKAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL", "oauthTokenEndpointUri"),
                  ("KJOBS_RDKAFKA_SASL_OAUTHBEARER_EXTENSIONS", "oauthExtensions")]
        if "KJOBS_RDKAFKA_SASL_OAUTHBEARER_SCOPE" in pod_src:
            want["scopes"] = ("value", ",".join(pod_src["KJOBS_RDKAFKA_SASL_OAUTHBEARER_SCOPE"][1].split(" ")))
    if mech == "GSSAPI":
        pairs += [("KJOBS_RDKAFKA_SASL_KERBEROS_KEYTAB", "keytab"), ("KRB5_CONFIG", "kerberosConfig"),
                  ("KJOBS_RDKAFKA_SASL_KERBEROS_SERVICE_NAME", "kerberosServiceName")]
        name, _, realm = pod_src["KJOBS_RDKAFKA_SASL_KERBEROS_PRINCIPAL"][1].partition("@")
        want["username"], want["realm"] = ("value", name), ("value", realm)
    for env, param in pairs:
        if env in pod_src:
            src = pod_src[env]
            want[param] = file_as_secret(src) if param != "kerberosConfig" else src
    check(keda == want, f"{where}: KEDA TriggerAuthentication does not carry the pods' credentials:\n"
                        f"  KEDA {keda}\n  pods {want}")
    return bool(want)


def check_labels(where, obj):
    labels = obj["metadata"].get("labels") or {}
    for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
              "app.kubernetes.io/managed-by", "helm.sh/chart"):
        check(k in labels, f"{where}: {obj['kind']} {obj['metadata']['name']} lacks label {k}")


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_templates(d):
    """The pod template metadata of a workload object, if it has one."""
    if d["kind"] in ("Deployment", "Job"):
        return [d["spec"]["template"]["metadata"]]
    return []


def check_common_meta(where, d, values):
    """commonLabels on every object and pod template; commonAnnotations on every object, under
    the object's own annotations (which win on the same key)."""
    name = f"{where}: {d['kind']} {d['metadata']['name']}"
    for meta in [d["metadata"]] + pod_templates(d):
        labels = meta.get("labels") or {}
        for k, v in values["commonLabels"].items():
            check(labels.get(k) == v, f"{name}: commonLabels {k}={v!r} missing ({labels.get(k)!r})")
    ann = d["metadata"].get("annotations") or {}
    for k, v in values["commonAnnotations"].items():
        check(k in ann, f"{name}: commonAnnotations {k} missing")
    for key in ("helm.sh/hook", "helm.sh/hook-weight"):
        if key in values["commonAnnotations"]:
            check(False, f"{where}: commonAnnotations sets {key}")


def expected_image(values, app_version):
    img = values["image"]
    repo = (img["registry"].rstrip("/") + "/" if img["registry"] else "") + img["repository"]
    return f"{repo}@{img['digest']}" if img["digest"] else f"{repo}:{img['tag'] or app_version}"


# --- NetworkPolicy, evaluated the way a CNI does (matchLabels selectors; enough for the chart) ---

def _selector_matches(sel, labels):
    return all(labels.get(k) == v for k, v in ((sel or {}).get("matchLabels") or {}).items()) and \
        not (sel or {}).get("matchExpressions")


def _peer_matches(peer, pod_labels, ns, ns_labels, policy_ns):
    if "ipBlock" in peer:
        return False  # a pod peer is not an ipBlock in these checks
    if "namespaceSelector" in peer:
        if not _selector_matches(peer["namespaceSelector"], ns_labels):
            return False
    elif ns != policy_ns:
        return False
    return "podSelector" not in peer or _selector_matches(peer["podSelector"], pod_labels)


def _port_matches(rule_ports, port, proto):
    return not rule_ports or any(p.get("port") in (port, None) and p.get("protocol", "TCP") == proto
                                 for p in rule_ports)


def netpol_allows_ingress(np, port, pod_labels, ns, ns_labels, policy_ns="jobs"):
    if "Ingress" not in np["spec"].get("policyTypes", ["Ingress"]):
        return True
    for rule in np["spec"].get("ingress") or []:
        peers = rule.get("from")
        if _port_matches(rule.get("ports"), port, "TCP") and (
                not peers or any(_peer_matches(p, pod_labels, ns, ns_labels, policy_ns) for p in peers)):
            return True
    return False


def netpol_allows_egress(np, port, proto, to_anywhere=True):
    """Egress to an arbitrary outside address (not a pod, not in any ipBlock we name)."""
    if "Egress" not in np["spec"].get("policyTypes", []):
        return True
    return any(_port_matches(r.get("ports"), port, proto) and not r.get("to") for r in np["spec"].get("egress") or [])


def bootstrap_ports(bootstrap):
    """librdkafka's [proto://]host[:port] list: "[v6]:port", "host:port", a host (or a bare IPv6
    address) without a port is 9092, librdkafka's default."""
    if str(bootstrap) == "embedded":
        return []
    ports = set()
    for h in str(bootstrap).split(","):
        h = re.sub(r"^[A-Za-z_]+://", "", h.strip())
        if not h:
            continue
        m = re.search(r"\]:([0-9]+)$", h) if h.startswith("[") else \
            (re.search(r":([0-9]+)$", h) if h.count(":") == 1 else None)
        ports.add(int(m.group(1)) if m else 9092)
    return sorted(ports)


def check_bootstrap_ports(helm):
    """The restricted NetworkPolicy's Kafka egress rule names exactly the broker ports: not the
    trailing digits of a host name ("kafka-0" is not port 0), 9092 for an entry without a port."""
    cases = {
        "kafka-0,kafka-1": [9092],
        "broker1": [9092],
        "kafka.svc": [9092],
        "kafka-0:9093,kafka-1:9094": [9093, 9094],
        "[::1]:9095,[fe80::1],SSL://b-1.kafka:9096": [9092, 9095, 9096],
        "fe80::1:2": [9092],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for bootstrap, want in cases.items():
            check(bootstrap_ports(bootstrap) == want, f"bootstrap_ports({bootstrap!r}) is not {want}")
            path = os.path.join(tmp, "np.yaml")
            with open(path, "w") as f:
                yaml.safe_dump({"networkPolicy": {"enabled": True, "allowExternalEgress": False},
                                "config": {"kafka": {"bootstrap": bootstrap}}}, f)
            docs = render(helm, [path])
            np = one(docs, "NetworkPolicy", None, f"bootstrap {bootstrap!r}")
            if not np:
                continue
            got = sorted(p["port"] for r in np["spec"]["egress"] for p in r.get("ports") or []
                         if p["port"] != 53)
            check(got == want, f"bootstrap {bootstrap!r}: NetworkPolicy allows Kafka ports {got}, want {want}")


# --- PrometheusRule against docs/operations.md ---

def documented_alerts():
    """From docs/operations.md's "Alerts to set" table: every PromQL expression in a row (in
    backticks, naming a kjobs_ metric) with the row's `for` duration (the one written after the
    first expression), and the alert names of the example rule file."""
    text = open(DOCS_OPERATIONS).read()
    section = text.split("## Alerts to set", 1)[1]
    exprs = {}
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| alert") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        snippets = [s for s in re.findall(r"`([^`]+)`", " ".join(cells[1:])) if "kjobs_" in s]
        m = re.search(r"`[^`]+`\s+for\s+([0-9]+[smh])", cells[1])
        for i, s in enumerate(snippets):
            # the row's `for` belongs to its first expression; the others ("also ...") name none
            exprs[s.replace("\\|", "|")] = (m.group(1) if m else None) if i == 0 else "any"
    names = re.findall(r"- alert: (\w+)", section)
    return exprs, names


def unscope(expr, scope, main_topic):
    """The rule expression with the chart's release scope removed again, and the release's main
    topic written as the docs write it (the default, `jobs`)."""
    expr = expr.replace("{" + scope + ",", "{").replace("{" + scope + "}", "")
    return expr.replace(f'topic="{main_topic}"', 'topic="jobs"')


def promql_selectors(expr, metric):
    """The label matchers of every `metric{...}` selector in a PromQL expression, as lists of
    (label, op, value) with the PromQL string unescaped."""
    out = []
    for body in re.findall(re.escape(metric) + r"\{([^}]*)\}", expr):
        ms = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', body)
        out.append([(k, op, re.sub(r"\\(.)", r"\1", v)) for k, op, v in ms])
    return out


def promql_matches(matchers, labels):
    """Whether a series with these labels is selected (PromQL regexes are anchored; a missing
    label is the empty string)."""
    for k, op, v in matchers:
        got = labels.get(k, "")
        if op in ("=~", "!~"):
            ok = (re.fullmatch(v, got) is not None) == (op == "=~")
        else:
            ok = (got == v) == (op == "=")
        if not ok:
            return False
    return True


def check_lag_alert_topics(where, rule, values, svc_name):
    """KjobsLagGrowing is about the main topic: every kjobs_consumer_lag selector of it must
    select the main topic's series and none of the retry-ladder topics' (whose lag is jobs waiting
    to be due) — whatever topics.main and topics.retry_prefix are. Checked against series labelled
    as a ServiceMonitor target of this release, with the topic names kjobs derives from the same
    values (ladder_topics)."""
    c = values["config"]
    main = c["topics"]["main"]
    ladder = ladder_topics(c)
    sels = promql_selectors(rule["expr"], "kjobs_consumer_lag")
    check(sels, f"{where}: KjobsLagGrowing has no kjobs_consumer_lag selector: {rule['expr']}")
    series = {"namespace": "jobs", "service": svc_name, "partition": "0"}
    check(all(promql_matches(m, {**series, "topic": main}) for m in sels),
          f"{where}: KjobsLagGrowing does not count the main topic {main!r}: {rule['expr']}")
    for t in ladder:
        check(not any(promql_matches(m, {**series, "topic": t}) for m in sels),
              f"{where}: KjobsLagGrowing counts ladder topic {t!r} (retry_prefix "
              f"{c['topics'].get('retry_prefix')!r}) as main-topic lag: {rule['expr']}")


def check_prometheus_rule(where, docs, values, svc_name):
    prs = by_kind(docs, "PrometheusRule")
    pv = values["prometheusRule"]
    if not pv["enabled"]:
        check(not prs, f"{where}: PrometheusRule rendered though disabled")
        return
    if not check(len(prs) == 1, f"{where}: PrometheusRule enabled but {len(prs)} rendered"):
        return
    pr = prs[0]
    check(pr["metadata"].get("namespace") == (pv["namespace"] or "jobs"), f"{where}: PrometheusRule namespace")
    for k, v in pv["labels"].items():
        check(pr["metadata"]["labels"].get(k) == v, f"{where}: PrometheusRule label {k}")
    rules = [r for g in pr["spec"]["groups"] for r in g["rules"]]
    extra = pv["extraRules"]
    check(rules[len(rules) - len(extra):] == extra if extra else True, f"{where}: extraRules not appended as given")
    chart_rules = rules[:len(rules) - len(extra)] if extra else rules
    # every metric selector is scoped to the release's targets: those of its Service
    scope = f'namespace="jobs",service="{svc_name}"'
    for r in chart_rules:
        for sel in re.findall(r"kjobs_[a-z_]+(\{[^}]*\})?", r["expr"]):
            check(sel.startswith("{" + scope), f"{where}: {r['alert']}: selector {sel or '(none)'} not scoped to {scope}")
    doc_exprs, doc_names = documented_alerts()
    check(len(doc_exprs) >= 12, f"docs/operations.md: only {len(doc_exprs)} alert expressions found")
    got = {unscope(r["expr"], scope, values["config"]["topics"]["main"]): r for r in chart_rules}
    for r in chart_rules:
        if r["alert"] == "KjobsLagGrowing":
            check_lag_alert_topics(where, r, values, svc_name)
    names = {r["alert"] for r in chart_rules}
    off = set(pv["disabledAlerts"])
    keda0 = values["autoscaling"]["keda"]["enabled"] and values["autoscaling"]["keda"]["minReplicaCount"] == 0
    if keda0:
        off.add("KjobsAbsent")
    check(not (names & off), f"{where}: disabled alerts rendered: {names & off}")
    for expr, dur in doc_exprs.items():
        r = got.get(expr)
        if r is None:
            continue
        check(dur == "any" or r.get("for") == dur, f"{where}: {r['alert']} for={r.get('for')!r}, docs say {dur!r}")
    missing = set(doc_exprs) - set(got)
    # an expression the docs list may only be missing because its alert was disabled
    check(len(missing) <= len(off), f"{where}: documented alerts not in the PrometheusRule: {sorted(missing)}")
    for expr in got:
        check(expr in doc_exprs, f"{where}: PrometheusRule alert {got[expr]['alert']} is not in docs/operations.md: {expr}")
    if not off:
        check(set(doc_names) <= names, f"{where}: docs' example alert names {sorted(set(doc_names) - names)} missing")
    for r in chart_rules:
        check(r.get("labels", {}).get("severity") in ("page", "ticket"), f"{where}: {r['alert']} severity")


def check_conventions(where, docs, values, dep, c, spec):
    """Item-3 chart conventions: image reference, extra env, init containers and sidecars,
    NetworkPolicy, ServiceMonitor options, PrometheusRule and the `helm test` pod."""
    # config.limits (a list setting) is written as given: strings stay strings, numbers numbers
    cm = [d for d in docs if d["kind"] == "ConfigMap" and "kjobs.cfg" in (d.get("data") or {})]
    if values["config"].get("limits") and check(cm, f"{where}: no kjobs.cfg ConfigMap"):
        written = libconfig_parse(cm[0]["data"]["kjobs.cfg"])["limits"]
        check(written == values["config"]["limits"],
              f"{where}: kjobs.cfg limits {written}, want {values['config']['limits']}")
    app_version = dep["metadata"]["labels"]["app.kubernetes.io/version"]
    image = expected_image(values, app_version)
    check(c["image"] == image, f"{where}: kjobs image {c['image']}, want {image}")

    # extra env: extraEnv entries in env, the ConfigMap and Secret through envFrom
    env = {e["name"]: e for e in c.get("env") or []}
    for e in values["extraEnv"]:
        check(env.get(e["name"]) == e, f"{where}: extraEnv {e['name']} not in the container")
    env_from = c.get("envFrom") or []
    want_from = ([{"configMapRef": {"name": values["extraEnvVarsCM"]}}] if values["extraEnvVarsCM"] else []) + \
        ([{"secretRef": {"name": values["extraEnvVarsSecret"]}}] if values["extraEnvVarsSecret"] else [])
    check(env_from == want_from, f"{where}: envFrom {env_from}, want {want_from}")
    # chart env wins over envFrom (Kubernetes: env overrides envFrom), so credentials stay the chart's
    check(all(ref.get("prefix") in (None, "") for ref in env_from), f"{where}: envFrom with a prefix")

    # initContainers after the chart's copy containers; sidecars after kjobs, as given
    inits = spec.get("initContainers") or []
    user_inits = values["initContainers"]
    check(inits[len(inits) - len(user_inits):] == user_inits if user_inits else True,
          f"{where}: initContainers {[x['name'] for x in inits]} do not end with the user's")
    check(all(x["name"] in ("copy-plugin", "copy-exec-handler") for x in inits[:len(inits) - len(user_inits)]),
          f"{where}: unexpected init containers {[x['name'] for x in inits]}")
    conts = spec["containers"]
    check(conts[0]["name"] == "kjobs" and conts[1:] == values["sidecars"],
          f"{where}: containers {[x['name'] for x in conts]}, want kjobs + sidecars")

    # the workers' Service (the console's, console.enabled, selects component=console)
    svc = next((d for d in by_kind(docs, "Service")
                if (d["spec"].get("selector") or {}).get("app.kubernetes.io/component") != "console"),
               None)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    port = int(values["config"]["http"]["listen"].rsplit(":", 1)[1])

    # helm test pod: asks the Service's /readyz, with the worker's image and security
    tests = [d for d in by_kind(docs, "Pod") if (d["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]
    test_pod = None
    if values["helmTest"]["enabled"] and values["service"]["enabled"]:
        if check(len(tests) == 1, f"{where}: {len(tests)} helm test pods"):
            test_pod = tests[0]
            tc = test_pod["spec"]["containers"][0]
            tenv = {e["name"]: e.get("value") for e in tc.get("env") or []}
            check(tc["image"] == image, f"{where}: helm test image {tc['image']}")
            check(tc["command"][:2] == ["bash", "-c"] and "/readyz" in tc["command"][2], f"{where}: helm test command")
            check(tenv.get("READYZ_HOST") == svc["metadata"]["name"] and
                  tenv.get("READYZ_PORT") == str(svc["spec"]["ports"][0]["port"]),
                  f"{where}: helm test asks {tenv.get('READYZ_HOST')}:{tenv.get('READYZ_PORT')}, not the Service")
            check(tenv.get("READYZ_ATTEMPTS") == str(values["helmTest"]["attempts"]), f"{where}: READYZ_ATTEMPTS")
            check(not selects(svc["spec"]["selector"], test_pod["metadata"]["labels"]),
                  f"{where}: the Service selects the helm test pod")
            check_security(f"{where} (helm test)", test_pod["spec"])
            check(test_pod["spec"].get("restartPolicy") == "Never", f"{where}: helm test restartPolicy")
    else:
        check(not tests, f"{where}: helm test pod rendered though disabled (or no Service)")

    # NetworkPolicy
    nps = by_kind(docs, "NetworkPolicy")
    npv = values["networkPolicy"]
    if not npv["enabled"]:
        check(not nps, f"{where}: NetworkPolicy rendered though disabled")
    elif check(len(nps) == 1, f"{where}: NetworkPolicy enabled but {len(nps)} rendered"):
        np = nps[0]
        check(_selector_matches(np["spec"]["podSelector"], pod_labels), f"{where}: NetworkPolicy does not select the workers")
        if test_pod:
            check(not _selector_matches(np["spec"]["podSelector"], test_pod["metadata"]["labels"]),
                  f"{where}: NetworkPolicy selects the helm test pod")
            check(netpol_allows_ingress(np, port, test_pod["metadata"]["labels"], "jobs", {}),
                  f"{where}: NetworkPolicy blocks the helm test pod from the HTTP port {port}")
        stranger = ({"app": "stranger"}, "elsewhere", {"kubernetes.io/metadata.name": "elsewhere"})
        if npv["metricsFrom"]:
            for peer in npv["metricsFrom"]:
                labels = (peer.get("podSelector") or {}).get("matchLabels") or {}
                ns_labels = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
                ns = ns_labels.get("kubernetes.io/metadata.name", "jobs" if "namespaceSelector" not in peer else "other")
                check(netpol_allows_ingress(np, port, labels, ns, ns_labels),
                      f"{where}: NetworkPolicy blocks metricsFrom peer {peer} from the metrics port {port}")
            if not npv["extraIngress"]:
                check(not netpol_allows_ingress(np, port, *stranger),
                      f"{where}: NetworkPolicy lets any pod reach port {port} though metricsFrom is set")
        else:
            check(netpol_allows_ingress(np, port, *stranger), f"{where}: metrics port {port} not open to any source")
        if not npv["extraIngress"]:
            check(not netpol_allows_ingress(np, port + 1, {}, "jobs", {}), f"{where}: NetworkPolicy opens port {port + 1}")
        kafka_ports = bootstrap_ports(values["config"]["kafka"]["bootstrap"])
        if npv["allowExternalEgress"]:
            check("Egress" not in np["spec"]["policyTypes"], f"{where}: egress restricted though allowExternalEgress")
        else:
            for kp in kafka_ports:
                check(netpol_allows_egress(np, kp, "TCP"), f"{where}: NetworkPolicy blocks Kafka port {kp}")
            check(netpol_allows_egress(np, 53, "UDP") and netpol_allows_egress(np, 53, "TCP"), f"{where}: DNS blocked")
            check(not netpol_allows_egress(np, 25, "TCP"), f"{where}: restricted egress still allows port 25 anywhere")
            check(all(r.get("ports") or r.get("to") for r in np["spec"]["egress"]),
                  f"{where}: an egress rule with neither ports nor peers allows everything")

    # ServiceMonitor options
    sms = by_kind(docs, "ServiceMonitor")
    smv = values["serviceMonitor"]
    if smv["enabled"] and sms:
        sm = sms[0]
        check(sm["metadata"].get("namespace") == (smv["namespace"] or "jobs"), f"{where}: ServiceMonitor namespace")
        check(sm["spec"]["namespaceSelector"] == {"matchNames": ["jobs"]},
              f"{where}: ServiceMonitor does not look in the release namespace: {sm['spec']['namespaceSelector']}")
        ep = sm["spec"]["endpoints"][0]
        check(ep.get("relabelings", []) == smv["relabelings"], f"{where}: ServiceMonitor relabelings")
        check(ep.get("metricRelabelings", []) == smv["metricRelabelings"], f"{where}: ServiceMonitor metricRelabelings")

    check_prometheus_rule(where, docs, values, svc["metadata"]["name"] if svc else f"{RELEASE}-kjobs")


def check_set(helm, name, values_file, chart_values):
    where = name
    values = deep_merge(chart_values, load_yaml(values_file))
    docs = render(helm, [values_file])
    for d in docs:
        check_labels(where, d)
        check_common_meta(where, d, values)

    cm = one(docs, "ConfigMap", f"{RELEASE}-kjobs", where)
    dep = one(docs, "Deployment", f"{RELEASE}-kjobs", where)
    if not (cm and dep):
        return docs
    cfg_text = cm["data"]["kjobs.cfg"]

    # kjobs.cfg: parses, and says exactly what the values say (types included).
    try:
        cfg = libconfig_parse(cfg_text)
    except ValueError as e:
        check(False, f"{where}: rendered kjobs.cfg does not parse: {e}")
        cfg = None
    if cfg is not None:
        want = expected_cfg(values)
        if not values["config"]["batch"]["max_pending"]:  # automatic: checked below
            want["batch"]["max_pending"] = cfg["batch"]["max_pending"]
        check(same_typed(cfg, want), f"{where}: kjobs.cfg differs from values:\n  got  {cfg}\n  want {want}")
        # Memory: the worst case of the rendered config fits the container's limit, and an
        # automatic max_pending is the largest that does (capped at 10000, or max_jobs if larger).
        limit = memory_bytes(values["resources"]["limits"]["memory"])
        bound = worst_case_bytes(values, cfg)
        if limit:
            check(bound <= limit, f"{where}: worst-case memory {bound} bytes (batch.max_pending "
                                  f"{cfg['batch']['max_pending']}) > limit {limit}")
            if values["config"]["batch"]["max_pending"] == 0:
                n = cfg["batch"]["max_pending"]
                check(n == max(10000, cfg["batch"]["max_jobs"]) or worst_case_bytes(values, cfg, n + 1) > limit,
                      f"{where}: automatic batch.max_pending {n} is not the largest that fits")
        check(cfg["batch"]["max_pending"] >= cfg["batch"]["max_jobs"],
              f"{where}: batch.max_pending < batch.max_jobs")

    pod = dep["spec"]["template"]
    spec = pod["spec"]
    c = next((x for x in spec["containers"] if x["name"] == "kjobs"), None)
    if not check(c is not None, f"{where}: no kjobs container"):
        return docs
    check(c["args"] == ["run", "-c", CONFIG_PATH], f"{where}: kjobs args {c['args']}")
    mount = next((m for m in c["volumeMounts"] if m["mountPath"] == os.path.dirname(CONFIG_PATH)), None)
    cvol = next((v for v in spec["volumes"] if mount and v["name"] == mount["name"]), {})
    check((cvol.get("configMap") or {}).get("name") == cm["metadata"]["name"],
          f"{where}: {os.path.dirname(CONFIG_PATH)} is not the ConfigMap {cm['metadata']['name']}")

    # checksum/config is the hash of exactly the mounted file.
    ann = (pod["metadata"].get("annotations") or {}).get("checksum/config")
    body = cfg_text[:-1] if cfg_text.endswith("\n") else cfg_text
    check(ann == hashlib.sha256(body.encode()).hexdigest(),
          f"{where}: checksum/config {ann} is not sha256 of the rendered kjobs.cfg")

    # Port and probes follow http.listen.
    port = int(values["config"]["http"]["listen"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in c.get("ports") or []}
    check(ports.get("http") == port, f"{where}: containerPort http={ports.get('http')} but http.listen port is {port}")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        pr = c.get(probe)
        custom = values["custom" + probe[0].upper() + probe[1:]]
        if custom:  # a custom probe replaces the chart's whole, even when the chart's is disabled
            check(pr == custom, f"{where}: {probe} {pr} is not the custom one {custom}")
            continue
        if not values[probe]["enabled"]:
            check(pr is None, f"{where}: {probe} rendered though disabled")
            continue
        if not check(pr is not None, f"{where}: no {probe}"):
            continue
        want = {k: v for k, v in values[probe].items() if k != "enabled"}
        check({k: pr.get(k) for k in want} == want, f"{where}: {probe} timings {pr} differ from {want}")
        get = pr.get("httpGet") or {}
        check(get.get("path") == path, f"{where}: {probe} path {get.get('path')} != {path}")
        p = get.get("port")
        check((ports.get(p) if isinstance(p, str) else p) == port,
              f"{where}: {probe} port {p} does not resolve to {port}")

    # Service reaches the same port and selects these pods (and not the hook Job's).
    pod_labels = pod["metadata"]["labels"]
    check(selects(dep["spec"]["selector"]["matchLabels"], pod_labels), f"{where}: Deployment selector misses its pods")
    if values["service"]["enabled"]:
        svc = one(docs, "Service", f"{RELEASE}-kjobs", where)
        if svc:
            check(selects(svc["spec"]["selector"], pod_labels), f"{where}: Service selector misses the pods")
            tp = svc["spec"]["ports"][0]["targetPort"]
            check((ports.get(tp) if isinstance(tp, str) else tp) == port, f"{where}: Service targetPort != {port}")

    check_security(where, spec)
    check(spec.get("automountServiceAccountToken") is False, f"{where}: service account token is mounted")
    check(spec.get("enableServiceLinks") is False, f"{where}: enableServiceLinks is not false "
          "(service env like KJOBS_PORT could collide with KJOBS_* settings)")

    # Drain: the kubelet's grace outlasts shutdown.grace_ms.
    grace = spec.get("terminationGracePeriodSeconds")
    check(isinstance(grace, int) and grace * 1000 > values["config"]["shutdown"]["grace_ms"],
          f"{where}: terminationGracePeriodSeconds {grace} s does not exceed shutdown.grace_ms "
          f"{values['config']['shutdown']['grace_ms']} ms")

    check_env(where, c, spec, values)
    # Secret settings reach the pod from their Secret, and only from it.
    secret_env = {f"KJOBS_{g}_{n}".upper() for g, n in secret_settings(values)}
    got = {}
    for e in c.get("env") or []:
        if e["name"] in secret_env and e not in values["extraEnv"]:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            got[e["name"]] = ("secret", ref.get("name"), ref.get("key")) if ref else ("value", e.get("value"))
    check(got == expected_secret_env(values), f"{where}: secret-setting env\n  got  {got}\n  want {expected_secret_env(values)}")
    for g, n in secret_settings(values):
        check(not re.search(rf"^\s*{n}\s*=", cfg_text, re.M), f"{where}: secret setting {g}.{n} is in the ConfigMap")

    # Resources and spread.
    check(bool((c.get("resources") or {}).get("requests")), f"{where}: no resource requests")
    tsc = spec.get("topologySpreadConstraints") or []
    check(len(tsc) >= 1 and all(selects(t["labelSelector"]["matchLabels"], pod_labels) for t in tsc),
          f"{where}: topologySpreadConstraints missing or not selecting the pods")

    # PDB.
    pdbs = by_kind(docs, "PodDisruptionBudget")
    if values["pdb"]["enabled"]:
        if check(len(pdbs) == 1, f"{where}: PDB enabled but {len(pdbs)} rendered"):
            check(selects(pdbs[0]["spec"]["selector"]["matchLabels"], pod_labels), f"{where}: PDB misses the pods")
    else:
        check(not pdbs, f"{where}: PDB rendered though disabled")

    partitions = values["config"]["topics"]["partitions"]
    hpa_on, keda_on = values["autoscaling"]["hpa"]["enabled"], values["autoscaling"]["keda"]["enabled"]
    check(("replicas" in dep["spec"]) == (not (hpa_on or keda_on)),
          f"{where}: Deployment.spec.replicas must be set exactly when no autoscaler owns it")
    if "replicas" in dep["spec"]:
        check(dep["spec"]["replicas"] <= partitions or values["allowIdleReplicas"],
              f"{where}: replicas {dep['spec']['replicas']} > partitions {partitions}")

    # HPA.
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    if hpa_on:
        if check(len(hpas) == 1, f"{where}: HPA enabled but {len(hpas)} rendered"):
            h = hpas[0]["spec"]
            check(h["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]},
                  f"{where}: HPA scaleTargetRef {h['scaleTargetRef']}")
            check(h["maxReplicas"] <= partitions, f"{where}: HPA maxReplicas {h['maxReplicas']} > partitions {partitions}")
            check(len(h["metrics"]) >= 1, f"{where}: HPA has no metrics")
            # scale-down damped as the values say (each step is a group rebalance)
            hv = values["autoscaling"]["hpa"]
            down = (h.get("behavior") or {}).get("scaleDown") or {}
            check(down.get("stabilizationWindowSeconds") == hv["scaleDownStabilizationSeconds"] and
                  down.get("policies") == [{"type": "Pods", "value": hv["scaleDownPodsPerPeriod"],
                                            "periodSeconds": hv["scaleDownPeriodSeconds"]}],
                  f"{where}: HPA scale-down behavior {down}")
    else:
        check(not hpas, f"{where}: HPA rendered though disabled")

    # KEDA.
    sos = by_kind(docs, "ScaledObject")
    tas = by_kind(docs, "TriggerAuthentication")
    if keda_on:
        if check(len(sos) == 1, f"{where}: KEDA enabled but {len(sos)} ScaledObjects"):
            so = sos[0]["spec"]
            k = values["autoscaling"]["keda"]
            check(so["scaleTargetRef"]["name"] == dep["metadata"]["name"], f"{where}: ScaledObject targets {so['scaleTargetRef']}")
            check(so["maxReplicaCount"] == k["maxReplicaCount"] <= partitions,
                  f"{where}: maxReplicaCount {so['maxReplicaCount']} (partitions {partitions})")
            check(so["minReplicaCount"] == k["minReplicaCount"], f"{where}: minReplicaCount")
            # scale-down damping and the fallback, as the values say
            beh = ((so.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior") or {}
            down = beh.get("scaleDown") or {}
            check(down.get("stabilizationWindowSeconds") == k["scaleDownStabilizationSeconds"] and
                  down.get("policies") == [{"type": "Pods", "value": k["scaleDownPodsPerPeriod"],
                                            "periodSeconds": k["scaleDownPeriodSeconds"]}],
                  f"{where}: KEDA scale-down behavior {down}")
            fb = k["fallback"]
            check(so.get("fallback") == ({"failureThreshold": fb["failureThreshold"], "replicas": fb["replicas"]}
                                         if fb["failureThreshold"] > 0 else None),
                  f"{where}: KEDA fallback {so.get('fallback')}")
            check(not so.get("fallback") or so["fallback"]["replicas"] <= so["maxReplicaCount"],
                  f"{where}: KEDA fallback replicas above maxReplicaCount")
            trig = so["triggers"]
            main_md = trig[0]["metadata"] if trig else {}
            for key in ("limitToPartitionsWithLag", "excludePersistentLag"):
                check(main_md.get(key) == str(k[key]).lower(), f"{where}: main trigger {key}={main_md.get(key)!r}")
                check(all(key not in t["metadata"] for t in trig[1:]),
                      f"{where}: {key} on a ladder trigger (ladder lag is mostly waiting jobs)")
            # one trigger for the main topic, then one per retry-ladder topic (the names kjobs
            # derives from the rendered kjobs.cfg), all on the same group
            ladder = ladder_topics(cfg) if cfg else []
            check(len(trig) == 1 + len(ladder) and all(t["type"] == "kafka" for t in trig),
                  f"{where}: {len(trig)} triggers for the main topic and {len(ladder)} ladder topics")
            check([t["metadata"].get("topic") for t in trig] == [cfg and cfg["topics"]["main"]] + ladder,
                  f"{where}: trigger topics {[t['metadata'].get('topic') for t in trig]}, want main + {ladder}")
            auth = values["kafkaAuth"]
            pod_src = pod_auth_sources(c, spec)
            need_auth = any(k not in ("KJOBS_RDKAFKA_SECURITY_PROTOCOL", "KJOBS_RDKAFKA_SASL_MECHANISM")
                            for k in pod_src)
            for i, tr in enumerate(trig):
                md = tr["metadata"]
                check(all(isinstance(v, str) for v in md.values()), f"{where}: KEDA metadata values must all be strings: {md}")
                lag, act = ((k["lagThreshold"], k["activationLagThreshold"]) if i == 0
                            else (k["ladderLagThreshold"], 0))
                for key, want in (("bootstrapServers", cfg and cfg["kafka"]["bootstrap"]),
                                  ("consumerGroup", cfg and cfg["kafka"]["group"]),
                                  ("lagThreshold", str(lag)),
                                  ("activationLagThreshold", str(act)),
                                  ("offsetResetPolicy", k["offsetResetPolicy"]),
                                  ("allowIdleConsumers", "true" if values["allowIdleReplicas"] else "false")):
                    check(md.get(key) == want, f"{where}: KEDA trigger {i} {key}={md.get(key)!r}, want {want!r}")
                check(md.get("sasl") == KEDA_SASL.get(auth["saslMechanism"]),
                      f"{where}: KEDA sasl={md.get('sasl')!r} for mechanism {auth['saslMechanism']!r}")
                check(md.get("tls") == ("enable" if auth["securityProtocol"] in ("SSL", "SASL_SSL") else None),
                      f"{where}: KEDA tls={md.get('tls')!r} for protocol {auth['securityProtocol']!r}")
                user_ref = k["authenticationRef"]
                if user_ref["name"]:
                    check(tr.get("authenticationRef") == {"name": user_ref["name"], "kind": user_ref["kind"]},
                          f"{where}: trigger {i} authenticationRef {tr.get('authenticationRef')}, want the user's {user_ref}")
                else:
                    check(bool(tr.get("authenticationRef")) == need_auth, f"{where}: trigger {i} authenticationRef")
            # what KEDA would do: never zero pods while any ladder topic holds a job; waiting
            # ladder jobs alone never scale out; an idle group may go to minReplicaCount
            if cfg and ladder:
                idle = {t: 0 for t in [cfg["topics"]["main"]] + ladder}
                check(keda_replicas(so, idle, partitions) == so["minReplicaCount"],
                      f"{where}: no lag anywhere, want minReplicaCount")
                for t in ladder:
                    for jobs in (1, 5000):
                        want = max(1, so["minReplicaCount"])
                        got = keda_replicas(so, dict(idle, **{t: jobs}), partitions)
                        check(got == want, f"{where}: {jobs} jobs waiting on {t} and none on the "
                                           f"main topic: KEDA runs {got} pods, want {want}")
            ref = trig[0].get("authenticationRef")
            if k["authenticationRef"]["name"]:  # the user's own: the chart renders none
                check(not tas, f"{where}: TriggerAuthentication rendered though authenticationRef names the user's")
            else:
                check(bool(ref) == need_auth and len(tas) == int(need_auth), f"{where}: TriggerAuthentication wiring")
            if ref and tas:
                check(ref["name"] == tas[0]["metadata"]["name"], f"{where}: authenticationRef names a missing object")
                check(check_keda_auth(where, tas[0], docs, pod_src, values),
                      f"{where}: TriggerAuthentication carries no credential")
    else:
        check(not sos and not tas, f"{where}: KEDA objects rendered though disabled")

    # ServiceMonitor.
    sms = by_kind(docs, "ServiceMonitor")
    if values["serviceMonitor"]["enabled"]:
        if check(len(sms) == 1, f"{where}: ServiceMonitor enabled but {len(sms)} rendered"):
            ep = sms[0]["spec"]["endpoints"][0]
            svc = one(docs, "Service", None, where)
            check(ep["path"] == "/metrics" and ep["port"] == "http", f"{where}: ServiceMonitor endpoint {ep}")
            check(svc is not None and selects(sms[0]["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]),
                  f"{where}: ServiceMonitor does not select the Service")
    else:
        check(not sms, f"{where}: ServiceMonitor rendered though disabled")

    check_conventions(where, docs, values, dep, c, spec)

    # Topics hook Job.
    jobs = by_kind(docs, "Job")
    if values["topicsJob"]["enabled"]:
        if check(len(jobs) == 1, f"{where}: topicsJob enabled but {len(jobs)} Jobs"):
            job = jobs[0]
            hooks = set((job["metadata"].get("annotations") or {}).get("helm.sh/hook", "").split(","))
            check({"pre-install", "pre-upgrade"} <= hooks, f"{where}: topics Job hooks {hooks}")
            jspec = job["spec"]["template"]["spec"]
            jc = jspec["containers"][0]
            check(jc["args"] == ["topics", "--create", "-c", CONFIG_PATH], f"{where}: topics Job args {jc['args']}")
            check(jc["image"] == c["image"], f"{where}: topics Job image differs from the worker's")
            jvol = next((v for v in jspec["volumes"] if v["name"] == "config"), {})
            hook_cm = one(docs, "ConfigMap", (jvol.get("configMap") or {}).get("name"), where)
            if hook_cm:
                ann = hook_cm["metadata"].get("annotations") or {}
                check(set(ann.get("helm.sh/hook", "").split(",")) == hooks,
                      f"{where}: the Job's ConfigMap is not a hook of the same events (it would not exist yet)")
                check(int(ann.get("helm.sh/hook-weight", "0")) < int(job["metadata"]["annotations"].get("helm.sh/hook-weight", "0")),
                      f"{where}: the Job's ConfigMap is not created before the Job")
                check(hook_cm["data"]["kjobs.cfg"] == cfg_text, f"{where}: hook ConfigMap differs from the worker's kjobs.cfg")
            check(rdkafka_env(jc) == rdkafka_env(c), f"{where}: topics Job Kafka env differs from the worker's")
            # Kafka settings outside kafkaAuth (extraEnv, envFrom, extra volumes) reach the Job too.
            check(jc.get("env") == c.get("env"), f"{where}: topics Job env differs from the worker's:\n"
                                                 f"  job    {jc.get('env')}\n  worker {c.get('env')}")
            check(jc.get("envFrom") == c.get("envFrom"), f"{where}: topics Job envFrom differs from the worker's")
            handler_vols = {"plugins", "exec-handler"}
            wmounts = [m for m in c.get("volumeMounts") or [] if m["name"] not in handler_vols]
            check(jc.get("volumeMounts") == wmounts, f"{where}: topics Job mounts differ from the worker's:\n"
                                                     f"  job    {jc.get('volumeMounts')}\n  worker {wmounts}")
            wvols = [v for v in spec.get("volumes") or [] if v["name"] not in handler_vols | {"config"}]
            check([v for v in jspec.get("volumes") or [] if v["name"] != "config"] == wvols,
                  f"{where}: topics Job volumes differ from the worker's")
            check_security(f"{where} (topics Job)", jspec)
            check(not (jspec.get("serviceAccountName") and values["serviceAccount"]["create"]),
                  f"{where}: topics Job uses the chart-created ServiceAccount, which does not exist at pre-install")
    else:
        check(not jobs, f"{where}: topics Job rendered though disabled")

    # Handler wiring: plugin and exec trees copied by initContainers into emptyDirs.
    inits = {x["name"]: x for x in spec.get("initContainers") or []}
    vols = {v["name"]: v for v in spec["volumes"]}
    cmounts = {m["name"]: m for m in c["volumeMounts"]}
    if values["plugin"]["enabled"]:
        ic = inits.get("copy-plugin")
        if check(ic is not None, f"{where}: no copy-plugin initContainer"):
            check(ic["image"].startswith(values["plugin"]["image"]["repository"] + ":"), f"{where}: plugin image {ic['image']}")
            target = cfg and cfg["handlers"]["plugin"]
            check(ic["command"] == ["cp", values["plugin"]["path"], target], f"{where}: copy-plugin command {ic['command']}")
            vm = ic["volumeMounts"][0]
            check("emptyDir" in vols.get(vm["name"], {}), f"{where}: plugin volume is not an emptyDir")
            km = cmounts.get(vm["name"])
            check(km is not None and target and target.startswith(km["mountPath"].rstrip("/") + "/"),
                  f"{where}: handlers.plugin {target} is not inside the volume mounted in the kjobs container")
    else:
        check("copy-plugin" not in inits, f"{where}: copy-plugin rendered though disabled")
    if values["execHandler"]["enabled"]:
        ic = inits.get("copy-exec-handler")
        if check(ic is not None, f"{where}: no copy-exec-handler initContainer"):
            vm = ic["volumeMounts"][0]
            km = cmounts.get(vm["name"])
            check("emptyDir" in vols.get(vm["name"], {}), f"{where}: exec volume is not an emptyDir")
            check(km is not None and km["mountPath"] == vm["mountPath"], f"{where}: exec tree not mounted at the same path in kjobs")
            exe = cfg and cfg["handlers"]["exec"][0]
            check(km is not None and exe and exe.startswith(km["mountPath"].rstrip("/") + "/"),
                  f"{where}: handlers.exec[0] {exe} is not inside the copied tree")
            check(ic["command"][:2] == ["cp", "-R"], f"{where}: copy-exec-handler command {ic['command']}")
    else:
        check("copy-exec-handler" not in inits, f"{where}: copy-exec-handler rendered though disabled")
    return docs


def check_checksum_moves(helm):
    def ann(sets):
        docs = render(helm, [], sets)
        dep = one(docs, "Deployment", f"{RELEASE}-kjobs", "checksum")
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    base = ann([])
    check(ann(["config.workers=3"]) != base, "checksum/config did not change when config.workers changed")
    check(ann(["config.retry.delays={5s,1m}"]) != base, "checksum/config did not change when retry.delays changed")
    check(ann(["replicaCount=2"]) == base, "checksum/config changed although the config did not")


def check_lag_alert_renders(helm, chart_values):
    """The PrometheusRule rendered for topic layouts other than the default: a retry prefix that
    does not contain ".retry.", one that does not start with the main topic, and a main topic that
    itself contains ".retry." (a pattern on ladder names would drop the main topic)."""
    for main, prefix in (("orders", "orders-retry-"), ("jobs", "retry_jobs."), ("billing.retry.v2", ""),
                         ("payments", "payments.retry.")):
        sets = ["prometheusRule.enabled=true", f"config.topics.main={main}",
                f"config.topics.retry_prefix={prefix}", "config.retry.delays={5s,1m,10m}"]
        where = f"PrometheusRule with {sets[1:3]}"
        rc, out, err = helm_template(helm, [], sets)
        if not check(rc == 0, f"{where}: render failed: {err}"):
            continue
        docs = [d for d in yaml.safe_load_all(out) if d]
        values = deep_merge(chart_values, {"prometheusRule": {"enabled": True},
                                           "config": {"topics": {"main": main, "retry_prefix": prefix},
                                                      "retry": {"delays": ["5s", "1m", "10m"]}}})
        # the worker's own config names the same topics the alert is checked against
        cm = one(docs, "ConfigMap", f"{RELEASE}-kjobs", where)
        cfg = libconfig_parse(cm["data"]["kjobs.cfg"]) if cm else None
        check(cfg is not None and cfg["topics"]["main"] == main and cfg["topics"]["retry_prefix"] == prefix,
              f"{where}: kjobs.cfg does not carry the topic names")
        rules = [r for pr in by_kind(docs, "PrometheusRule") for g in pr["spec"]["groups"] for r in g["rules"]]
        check(any(r["alert"] == "KjobsLagGrowing" for r in rules), f"{where}: no KjobsLagGrowing rule")
        check_prometheus_rule(where, docs, values, f"{RELEASE}-kjobs")


def check_service_off(helm):
    """service.enabled=false on its own renders: no Service, and nothing that needs one (the
    `helm test` pod asks the Service). With a ServiceMonitor or PrometheusRule it is refused
    (invalid/monitoring-without-service.yaml)."""
    rc, out, err = helm_template(helm, [], ["service.enabled=false"])
    if check(rc == 0, f"service.enabled=false: render failed: {err}"):
        kinds = [d["kind"] for d in yaml.safe_load_all(out) if d]
        check("Deployment" in kinds, "service.enabled=false: no Deployment rendered")
        for k in ("Service", "ServiceMonitor", "Pod"):
            check(k not in kinds, f"service.enabled=false: a {k} was rendered")


def check_invalid(helm):
    files = sorted(f for f in os.listdir(INVALID_DIR) if f.endswith(".yaml"))
    check(files, "no invalid value sets found")
    for f in files:
        path = os.path.join(INVALID_DIR, f)
        expects = re.findall(r"^# expect: (.+)$", open(path).read(), re.M)
        check(expects, f"invalid/{f}: has no '# expect:' lines")
        rc, _, err = helm_template(helm, [path])
        if check(rc != 0, f"invalid/{f}: helm template accepted it"):
            for e in expects:
                check(e.strip() in err, f"invalid/{f}: error output lacks {e.strip()!r}:\n{err}")
            # `# not:` lines: messages the file must not draw (values that are fine next to bad ones)
            for n in re.findall(r"^# not: (.+)$", open(path).read(), re.M):
                check(n.strip() not in err, f"invalid/{f}: error output has {n.strip()!r}:\n{err}")
        # validateValues reports every problem in one fail: all messages in a single run.


def check_notes(helm):
    """NOTES.txt is not rendered by `helm template`; render it through a throwaway copy."""
    with tempfile.TemporaryDirectory() as tmp:
        chart = os.path.join(tmp, "kjobs")
        shutil.copytree(CHART, chart)
        notes = open(os.path.join(chart, "templates", "NOTES.txt")).read()
        with open(os.path.join(chart, "templates", "_notes_test.tpl"), "w") as f:
            f.write('{{- define "kjobs.notesTest" -}}\n' + notes + '\n{{- end }}\n')
        with open(os.path.join(chart, "templates", "notes-test.yaml"), "w") as f:
            f.write('apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n'
                    '  notes: {{ include "kjobs.notesTest" . | toJson }}\n')
        # (sets, lines NOTES must have, lines it must not have)
        helm_test_note, rule_note = "`helm test` has no pod to run", 'service="t-kjobs",\nas a ServiceMonitor'
        for sets, needles, absent in (
                ([], ["sit idle", "kubectl", "kjobs lag"], [helm_test_note, rule_note]),
                (["allowIdleReplicas=true", "replicaCount=10"], ["WARNING: allowIdleReplicas"], []),
                (["autoscaling.keda.enabled=true"], ["KEDA scales"], []),
                (["service.enabled=false"], [helm_test_note], []),
                (["service.enabled=false", "helmTest.enabled=false"], [], [helm_test_note]),
                (["prometheusRule.enabled=true"], [rule_note], []),
                (["prometheusRule.enabled=true", "serviceMonitor.enabled=true"], [], [rule_note])):
            rc, out, err = helm_template(helm, [], sets, chart=chart)
            if not check(rc == 0, f"NOTES render {sets} failed: {err}"):
                continue
            doc = next(d for d in yaml.safe_load_all(out) if d and d["metadata"]["name"] == "notes")
            for n in needles:
                check(n in doc["data"]["notes"], f"NOTES.txt with {sets} lacks {n!r}")
            for n in absent:
                check(n not in doc["data"]["notes"], f"NOTES.txt with {sets} has {n!r}")


def leaf_paths(tree, prefix=""):
    """Documented units of values.yaml: scalars, lists and empty maps."""
    out = []
    for k, v in tree.items():
        p = f"{prefix}{k}"
        if isinstance(v, dict) and v and p not in ("updateStrategy",):
            out += leaf_paths(v, p + ".")
        else:
            out.append(p)
    return out


def schema_has(schema, path):
    node = schema
    for part in path.split("."):
        props = node.get("properties") or {}
        if part not in props:
            return False
        node = props[part]
    return True


def check_docs(chart_values):
    values_text = open(os.path.join(CHART, "values.yaml")).read()
    readme = open(os.path.join(CHART, "README.md")).read()
    schema = json.load(open(os.path.join(CHART, "values.schema.json")))
    params = re.findall(r"^\s*## @param (\S+) ", values_text, re.M)
    leaves = leaf_paths(chart_values)
    check(sorted(set(params)) == sorted(leaves),
          f"values.yaml @param lines and values differ: missing {sorted(set(leaves) - set(params))}, "
          f"extra {sorted(set(params) - set(leaves))}")
    sys.path.insert(0, HERE)
    import readme_params
    generated = readme_params.tables(os.path.join(CHART, "values.yaml"))
    check(readme.split("\n## Parameters\n", 1)[-1] == generated,
          "README.md parameter tables are stale: regenerate them with tests/helm/readme_params.py")
    for p in leaves:
        check(f"`{p}`" in readme, f"README.md does not document `{p}`")
        check(schema_has(schema, p), f"values.schema.json lacks {p}")

    def strict(node, where):
        if node.get("type") == "object" and "properties" in node:
            check(node.get("additionalProperties") is False, f"values.schema.json: {where} allows unknown keys")
            for k, v in node["properties"].items():
                strict(v, f"{where}.{k}")
    strict(schema, "(root)")


DURATION_PATTERN = "^([0-9]+|([0-9]+(ms|s|m|h|d))+)$"


def check_config_table(helm, chart_values):
    """config.* offers every setting of processor/config.c's table, as the file's groups and
    names: the schema lists exactly the table's settings with a fitting type, values.yaml has a
    default for each, and the default rendering writes every one to kjobs.cfg, except the secret
    settings, which are Secret references ({existingSecret, key}) turned into env."""
    rows = settings_table()
    check(len(rows) > 30 and all(r["type"] for r in rows), f"{CONFIG_C}: the settings table did not parse: {rows}")
    schema = json.load(open(os.path.join(CHART, "values.schema.json")))["properties"]["config"]
    want_types = {"KT_STRING": "string", "KT_INT": "integer", "KT_BOOL": "boolean", "KT_DOUBLE": "number",
                  "KT_STRLIST": "array", "KT_DURLIST": "array"}
    table_keys = set()
    for r in rows:
        table_keys.add(r["key"])
        path = [r["group"], r["name"]] if r["group"] else [r["name"]]
        node, value = schema, chart_values["config"]
        for part in path:
            node = (node.get("properties") or {}).get(part)
            value = value.get(part) if isinstance(value, dict) else None
            if node is None:
                break
        if not check(node is not None, f"values.schema.json: config.{r['key']} (a setting of processor/config.c) "
                                       f"is missing: the chart cannot set it"):
            continue
        check(value is not None, f"values.yaml: config.{r['key']} has no default")
        types = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
        if is_secret_string(r):
            check("object" in types and set(node.get("properties") or {}) == {"existingSecret", "key"}
                  and node.get("additionalProperties") is False,
                  f"values.schema.json: config.{r['key']} is a secret setting (KF_SECRET): it must be a Secret "
                  f"reference {{existingSecret, key}}, never a value in the ConfigMap")
            check(isinstance(value, dict) and value.get("existingSecret") == "",
                  f"values.yaml: config.{r['key']} must default to a Secret reference with existingSecret \"\"")
            continue
        if r["type"] == "KT_DURATION":
            # milliseconds where the file's example writes them so (KF_MS_INT), else "10s" strings
            want = "integer" if "KF_MS_INT" in r["flags"] else "string"
            check(types == [want] and (want == "integer" or node.get("pattern") == DURATION_PATTERN),
                  f"values.schema.json: config.{r['key']} ({r['type']}) should be {want}"
                  f"{'' if want == 'integer' else ' with the duration pattern'}, is {node}")
        else:
            check(types == [want_types[r["type"]]],
                  f"values.schema.json: config.{r['key']} ({r['type']}) should be {want_types[r['type']]}, is {types}")
    # nothing the table does not have: a key kjobs would refuse as unknown
    def schema_keys(node, prefix=""):
        out = set()
        for k, v in (node.get("properties") or {}).items():
            if v.get("type") == "object" and prefix == "":
                out |= schema_keys(v, k + ".")
            else:
                out.add(prefix + k)
        return out
    for name in LIST_SETTINGS:
        node = (schema.get("properties") or {}).get(name) or {}
        check(node.get("type") == "array" and node.get("items", {}).get("type") == "object",
              f"values.schema.json: config.{name} (a list setting) should be an array of objects, is {node}")
        check(chart_values["config"].get(name) == [], f"values.yaml: config.{name} should default to []")
    # schedule.periodic: a list of groups inside a group, parsed outside the table
    # (processor/periodic_config.c)
    extra = schema_keys(schema) - table_keys - set(LIST_SETTINGS) - {"schedule.periodic"}
    check(not extra, f"values.schema.json: config.* has {sorted(extra)}, which processor/config.c's table lacks")
    # the default rendering writes every non-secret setting, and no secret one
    cfg = libconfig_parse(one(render(helm), "ConfigMap", f"{RELEASE}-kjobs", "defaults")["data"]["kjobs.cfg"])
    written = {f"{g}.{n}" if isinstance(v, dict) else g for g, v in cfg.items()
               for n in (v if isinstance(v, dict) else [None])}
    want = {r["key"] for r in rows if not is_secret_string(r)} | set(LIST_SETTINGS)
    check(written == want, f"kjobs.cfg (defaults): settings missing {sorted(want - written)}, "
                           f"unexpected {sorted(written - want)}")


def check_fullname_docs(helm):
    """Object names follow the fullname rule (a release name containing "kjobs" is used as is):
    docs must name objects `<fullname>-…`, never `<release>-kjobs-…`, which is wrong for such a
    release. The KEDA ConfigMap of the docs is rendered for both kinds of release name."""
    for release, want in (("prod", "prod-kjobs-keda-auth"), ("kjobs-prod", "kjobs-prod-keda-auth")):
        p = subprocess.run([helm, "template", release, CHART, "-f", os.path.join(VALUES_DIR, "oauth-confluent.yaml"),
                            "--set", "autoscaling.keda.enabled=true"], capture_output=True, text=True)
        if check(p.returncode == 0, f"release {release}: render failed: {p.stderr}"):
            names = [d["metadata"]["name"] for d in yaml.safe_load_all(p.stdout) if d and d["kind"] == "ConfigMap"]
            check(want in names, f"release {release}: no KEDA ConfigMap {want} among {names}")
    for doc in (os.path.join(ROOT, "docs", "kubernetes.md"), os.path.join(CHART, "README.md")):
        text = open(doc).read()
        for m in re.findall(r"<release>-kjobs[-\w]*", text):
            check(False, f"{os.path.relpath(doc, ROOT)} names {m!r}: with a release name containing "
                         f"'kjobs' the object is <release>-…; write <fullname>…")
    check("`<fullname>-keda-auth`" in open(os.path.join(ROOT, "docs", "kubernetes.md")).read(),
          "docs/kubernetes.md does not name the KEDA ConfigMap `<fullname>-keda-auth`")


def check_memory_docs(helm):
    """docs/kubernetes.md's automatic batch.max_pending figures ("N with the defaults, M with 128
    partitions") are what the chart renders, and a default render leaves librdkafka's prefetch
    and fetch sizes to kjobs (no memory.* property in kafka.properties)."""
    text = open(os.path.join(ROOT, "docs", "kubernetes.md")).read()
    m = re.search(r"\(([0-9]+) with the defaults, ([0-9]+) with 128\s+partitions;\s+([0-9]+) with\s+no\s+"
                  r"memory\s+limit\)", text)
    if not check(m, "docs/kubernetes.md: no automatic batch.max_pending figures found"):
        return
    for sets, want in (((), int(m.group(1))), (("config.topics.partitions=128",), int(m.group(2))),
                       (("resources.limits.memory=",), int(m.group(3)))):
        cm = [d for d in render(helm, sets=sets) if d["kind"] == "ConfigMap" and "kjobs.cfg" in d.get("data", {})]
        cfg = libconfig_parse(cm[0]["data"]["kjobs.cfg"])
        check(cfg["batch"]["max_pending"] == want,
              f"docs/kubernetes.md says batch.max_pending {want} for {sets or 'the defaults'}; the chart renders "
              f"{cfg['batch']['max_pending']}")
        check(not [p for p in cfg["kafka"]["properties"]
                   if p.split("=")[0] in ("queued.max.messages.kbytes", "max.partition.fetch.bytes")],
              f"{sets or 'defaults'}: the chart sets librdkafka sizes itself: {cfg['kafka']['properties']}")


def cmd_render(args):
    chart_values = load_yaml(os.path.join(CHART, "values.yaml"))
    rc = subprocess.run([args.helm, "lint", "--strict", CHART], capture_output=True, text=True)
    check(rc.returncode == 0, f"helm lint --strict (defaults) failed:\n{rc.stdout}{rc.stderr}")
    sets = value_sets()
    for want in ("defaults", "sasl-tls", "keda", "hpa", "plugin", "exec", "topics-job", "auth-outside-kafkaauth", "mtls-strimzi",
                 "mtls-keypassword", "scram-strimzi", "oauth-confluent", "gssapi", "memory", "ci/default",
                 "ci/conventions", "ci/custom-probes"):
        check(want in dict(sets), f"value set {want} is missing")
    for name, path in sets:
        rc = subprocess.run([args.helm, "lint", "--strict", CHART, "-f", path], capture_output=True, text=True)
        check(rc.returncode == 0, f"helm lint --strict -f {name} failed:\n{rc.stdout}{rc.stderr}")
        check_set(args.helm, name, path, chart_values)
        print(f"rendered and checked: {name}")
    check_checksum_moves(args.helm)
    check_bootstrap_ports(args.helm)
    check_fullname_docs(args.helm)
    check_memory_docs(args.helm)
    check_lag_alert_renders(args.helm, chart_values)
    check_service_off(args.helm)
    check_invalid(args.helm)
    check_notes(args.helm)
    check_docs(chart_values)
    check_config_table(args.helm, chart_values)


# ---------------------------------------------------------------------------------------------
# kjobs run --check-config on the rendered files


def throwaway_client_cert(tmp, label, password=None):
    """A self-signed certificate and its private key (PEM), the key encrypted with password."""
    cert, key = os.path.join(tmp, f"{label}.crt"), os.path.join(tmp, f"{label}.key")
    cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "1", "-subj", "/CN=kjobs-check",
           "-keyout", key, "-out", cert]
    cmd += ["-passout", f"pass:{password}"] if password else ["-noenc"]  # OpenSSL 3 (Debian 12, 13)
    subprocess.run(cmd, check=True, capture_output=True)
    return cert, key


def check_effective(where, out, cfg_path, env, rows):
    """The effective configuration `kjobs run --check-config` prints for a rendered kjobs.cfg:
    its settings are exactly the table's as tests/helm reads processor/config.c (so that reading
    cannot drift from the binary); every setting comes from the file (or from a stand-in env the
    check set), and a secret one from its env only, printed "<hidden>"."""
    eff = {}
    for line in out.splitlines():
        m = re.match(r"^([a-z_.]+) = (.*);  # (.*)$", line)
        if m:
            eff[m.group(1)] = (m.group(2), m.group(3))
    for name in LIST_SETTINGS:  # may span lines: "limits = (\n  {...}\n);  # origin"
        m = re.search(rf"^{name} = \((.*?)\);  # (.*)$", out, re.S | re.M)
        if check(m is not None, f"check-config {where}: kjobs printed no {name}"):
            eff.pop(name, None)
            check(m.group(2).startswith(cfg_path + ":"),
                  f"check-config {where}: {name} comes from {m.group(2)}, not from the rendered kjobs.cfg")
    keys = [r["key"] for r in rows]
    check(set(eff) == set(keys), f"check-config {where}: kjobs' settings {sorted(set(eff) - set(keys))} are not in "
                                 f"the table read from processor/config.c, and {sorted(set(keys) - set(eff))} are not in kjobs")
    for r in rows:
        if r["key"] not in eff:
            continue
        value, origin = eff[r["key"]]
        if is_secret_string(r):
            if r["env"] in env:
                check(value == '"<hidden>"' and origin == f"environment {r['env']}",
                      f"check-config {where}: secret {r['key']} = {value} from {origin}, want \"<hidden>\" from its env")
            else:
                check(origin == "default", f"check-config {where}: secret {r['key']} comes from {origin}, not from a Secret")
        else:
            rdkafka_env = origin.startswith("environment (") and any(k.startswith("KJOBS_RDKAFKA_") for k in env)
            check(origin.startswith(cfg_path + ":") or (r["env"] in env and origin == f"environment {r['env']}")
                  or rdkafka_env,  # kafka.properties with the kafkaAuth env appended
                  f"check-config {where}: {r['key']} comes from {origin}, not from the rendered kjobs.cfg")


def cmd_check_config(args):
    kjobs = os.path.abspath(args.kjobs or "")
    if not (os.path.isfile(kjobs) and os.access(kjobs, os.X_OK)):
        raise SystemExit(f"check-config: kjobs binary {kjobs} not found or not executable (build it first)")
    ca_bundle = "/etc/ssl/certs/ca-certificates.crt"
    with tempfile.TemporaryDirectory() as tmp:
        base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp}

        def run(cfg_text, env, label):
            path = os.path.join(tmp, f"{label}.cfg")
            with open(path, "w") as f:
                f.write(cfg_text)
            p = subprocess.run([kjobs, "run", "--check-config", "-c", path], env={**base_env, **env},
                               capture_output=True, text=True, timeout=30, cwd=tmp)
            return p.returncode, p.stdout + p.stderr

        # OIDC (sasl.oauthbearer.method=oidc) exists only in a librdkafka built with libcurl:
        # the one kjobs builds has it, Debian 12's 2.0.2 (the supported minimum) does not.
        probe = subprocess.run([kjobs, "run", "--check-config", "-X", "sasl.oauthbearer.method=oidc"],
                               env=base_env, capture_output=True, text=True, timeout=30, cwd=tmp)
        oidc = probe.returncode == 0
        rows = settings_table()

        for f, values_path in value_sets():
            label = f.replace("/", "-")
            docs = render(args.helm, [values_path])
            cm = one(docs, "ConfigMap", f"{RELEASE}-kjobs", f)
            dep = one(docs, "Deployment", f"{RELEASE}-kjobs", f)
            c = dep["spec"]["template"]["spec"]["containers"][0]
            env = {}
            for e in c.get("env") or []:
                if "value" in e:
                    env[e["name"]] = e["value"]
                elif "secretKeyRef" in (e.get("valueFrom") or {}):
                    env[e["name"]] = "from-secret-" + e["valueFrom"]["secretKeyRef"]["key"]
            if "KJOBS_RDKAFKA_SSL_CA_LOCATION" in env:
                # The mounted Secret does not exist here; point at a real PEM bundle instead.
                env["KJOBS_RDKAFKA_SSL_CA_LOCATION"] = ca_bundle
            if "KJOBS_RDKAFKA_SSL_CERTIFICATE_LOCATION" in env:
                # librdkafka loads the client certificate and key when the client is created:
                # a throwaway pair stands in for the mounted Secret (the key encrypted with the
                # stand-in password when the chart passes a key password).
                password = env.get("KJOBS_RDKAFKA_SSL_KEY_PASSWORD")
                cert, key = throwaway_client_cert(tmp, label, password)
                env["KJOBS_RDKAFKA_SSL_CERTIFICATE_LOCATION"] = cert
                env["KJOBS_RDKAFKA_SSL_KEY_LOCATION"] = key
                if password:  # the check must be able to fail: a wrong key password exits 2
                    rc, out = run(cm["data"]["kjobs.cfg"], dict(env, KJOBS_RDKAFKA_SSL_KEY_PASSWORD="wrong"),
                                  label + "-wrongpass")
                    check(rc == 2, f"check-config {f}: a wrong ssl.key.password exited {rc}, want 2:\n{out}")
            cfg_text = cm["data"]["kjobs.cfg"]
            # --check-config loads the plugin and looks the exec program up, as `run` does; the
            # image's files are not here, so stand-ins take their place (the rendered values
            # themselves are still parsed and type-checked from the file).
            if re.search(r'^\s*plugin\s*=\s*"[^"]+"', cfg_text, re.M):
                env["KJOBS_HANDLERS_PLUGIN"] = os.path.join(
                    os.path.dirname(kjobs), "examples", "libkjobs_example_recorder.so")
                env["KJOBS_RECORD_FILE"] = os.path.join(tmp, "records.tsv")  # what it needs
            if re.search(r'^\s*exec\s*=\s*\[\s*"', cfg_text, re.M):
                env["KJOBS_HANDLERS_EXEC"] = "/bin/sh"
            rc, out = run(cfg_text, env, label)
            if not oidc and env.get("KJOBS_RDKAFKA_SASL_OAUTHBEARER_METHOD") == "oidc":
                # this librdkafka cannot do OIDC: the worker must refuse the settings at startup
                check(rc == 2 and "sasl.oauthbearer" in out,
                      f"check-config {f}: a librdkafka without OIDC exited {rc}, want 2:\n{out}")
                print(f"kjobs run --check-config {f}: exit {rc} (this librdkafka has no OIDC)")
                continue
            check(rc == 0, f"check-config {f}: kjobs run --check-config exited {rc}:\n{out}")
            if rc == 0:
                check_effective(f, out, os.path.join(tmp, f"{label}.cfg"), env, rows)
            print(f"kjobs run --check-config {f}: exit {rc}")

        # The check must be able to fail: a broken file and a bad env value must exit 2.
        docs = render(args.helm, [])
        good = one(docs, "ConfigMap", f"{RELEASE}-kjobs", "defaults")["data"]["kjobs.cfg"]
        rc, out = run(good.replace("workers = 2;", 'workers = "two";'), {}, "broken")
        check(rc == 2, f"check-config: a config with workers = \"two\" exited {rc}, want 2:\n{out}")
        rc, out = run(good, {"KJOBS_RDKAFKA_SECURITY_PROTOCOL": "CARRIER_PIGEON"}, "badenv")
        check(rc == 2, f"check-config: security.protocol=CARRIER_PIGEON exited {rc}, want 2:\n{out}")


# ---------------------------------------------------------------------------------------------
# The rendered probes and `helm test` script against a real worker


def http_status(port, path):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def run_readyz_script(script, port, attempts):
    """The helm test pod's script, as the pod runs it, against 127.0.0.1:port."""
    return subprocess.run(script, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                       "READYZ_HOST": "127.0.0.1", "READYZ_PORT": str(port),
                                       "READYZ_ATTEMPTS": str(attempts)},
                          capture_output=True, text=True, timeout=60)


def cmd_probes(args):
    """Start `kjobs run` (embedded broker; the rendered kjobs.cfg otherwise) and send it what
    the kubelet would: every httpGet probe the Deployment of ci/conventions (chart probes with
    the startup probe on) and ci/custom-probes renders must be answered 200 once the worker is
    up, on the port the probe names. Then run the `helm test` pod's own script with bash
    against the worker (must exit 0) and against a server answering 503 (must exit 1)."""
    import http.server
    import threading
    import time
    kjobs = os.path.abspath(args.kjobs or "")
    if not (os.path.isfile(kjobs) and os.access(kjobs, os.X_OK)):
        raise SystemExit(f"probes: kjobs binary {kjobs} not found or not executable (build it first)")
    rendered = {name: render(args.helm, [os.path.join(CI_DIR, f"{name}-values.yaml")])
                for name in ("conventions", "custom-probes")}
    docs = rendered["conventions"]
    cfg_text = one(docs, "ConfigMap", f"{RELEASE}-kjobs", "probes")["data"]["kjobs.cfg"]
    test_pod = next(d for d in by_kind(docs, "Pod") if d["metadata"]["annotations"].get("helm.sh/hook") == "test")
    script = test_pod["spec"]["containers"][0]["command"]
    # the pod's port; locally the worker listens on a free port instead (KJOBS_HTTP_LISTEN)
    listen_port = int(libconfig_parse(cfg_text)["http"]["listen"].rsplit(":", 1)[1])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "kjobs.cfg")
        with open(cfg, "w") as f:
            f.write(cfg_text)
        log = open(os.path.join(tmp, "worker.log"), "w+")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp,
               "KJOBS_KAFKA_BOOTSTRAP": "embedded", "KJOBS_HTTP_LISTEN": "127.0.0.1:0"}
        worker = subprocess.Popen([kjobs, "run", "-c", cfg], env=env, cwd=tmp,
                                  stdout=subprocess.DEVNULL, stderr=log)
        try:
            port, deadline = None, time.time() + 30
            while port is None and time.time() < deadline and worker.poll() is None:
                time.sleep(0.2)
                log.seek(0)
                for line in log:
                    if '"http listening"' in line:
                        port = json.loads(line)["port"]
            if not check(port is not None, f"probes: the worker did not listen (exit {worker.poll()})"):
                return
            for name, set_docs in rendered.items():
                dep = one(set_docs, "Deployment", f"{RELEASE}-kjobs", name)
                c = dep["spec"]["template"]["spec"]["containers"][0]
                named = {p["name"]: p["containerPort"] for p in c["ports"]}
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    get = (c.get(probe) or {}).get("httpGet")
                    if not check(get is not None, f"probes {name}: no httpGet {probe}"):
                        continue
                    p = get["port"]
                    check((named.get(p) if isinstance(p, str) else p) == listen_port,
                          f"probes {name}: {probe} port {p} is not the listener's ({listen_port})")
                    deadline, status = time.time() + 60, 0
                    while status != 200 and time.time() < deadline:
                        status = http_status(port, get["path"])
                        if status != 200:
                            time.sleep(0.5)
                    check(status == 200, f"probes {name}: {probe} GET {get['path']} answered {status}, want 200")
                    print(f"probes {name}: {probe} GET {get['path']}: {status}")
            # the probe check can fail: a path kjobs does not serve is 404
            check(http_status(port, "/startupz") == 404, "probes: GET /startupz was not 404")
            # the helm test pod's script, as the pod runs it, against the worker
            p = run_readyz_script(script, port, attempts=15)
            check(p.returncode == 0 and " 200" in p.stdout,
                  f"probes: helm test script against a ready worker exited {p.returncode}:\n{p.stdout}{p.stderr}")
            print(f"helm test script against the worker: exit {p.returncode}: {p.stdout.strip().splitlines()[-1]}")
        finally:
            worker.terminate()
            try:
                rc = worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                rc = worker.wait()
            log.seek(0)
            check(rc == 0, f"probes: the worker exited {rc} on SIGTERM:\n{log.read()[-2000:]}")

    class Draining(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"draining")

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Draining)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        p = run_readyz_script(script, srv.server_address[1], attempts=2)
        check(p.returncode == 1 and " 503" in p.stdout,
              f"probes: helm test script against a 503 server exited {p.returncode}, want 1:\n{p.stdout}{p.stderr}")
        print(f"helm test script against a 503 server: exit {p.returncode}")
    finally:
        srv.shutdown()


# ---------------------------------------------------------------------------------------------
# OpenAPI validation through the npm models


def cmd_openapi(args):
    node = shutil.which("node")
    if not node:
        raise SystemExit("openapi: node not found")
    payload = {}
    for name, path in value_sets():
        payload[name] = render(args.helm, [path])
    payload["servicemonitor"] = [d for d in render(args.helm, [], ["serviceMonitor.enabled=true"])
                                 if d["kind"] == "ServiceMonitor"]
    p = subprocess.run([node, os.path.join(HERE, "validate_openapi.cjs"), args.node_modules],
                       input=json.dumps(payload), capture_output=True, text=True)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    check(p.returncode == 0, "openapi: some manifests do not validate")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["render", "check-config", "openapi", "probes"])
    ap.add_argument("--helm", required=True)
    ap.add_argument("--kjobs", help="kjobs binary (check-config, probes)")
    ap.add_argument("--node-modules", default=os.path.join(ROOT, ".deps", "node", "node_modules"))
    args = ap.parse_args()
    if not os.access(args.helm, os.X_OK):
        raise SystemExit(f"helm not found at {args.helm} (run scripts/install-deps.sh)")
    {"render": cmd_render, "check-config": cmd_check_config, "openapi": cmd_openapi,
     "probes": cmd_probes}[args.mode](args)
    if failures:
        print(f"\n{len(failures)} check(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  - {f}", file=sys.stderr)
        sys.exit(1)
    print(f"helm {args.mode}: all checks passed")


if __name__ == "__main__":
    main()
