// validate_openapi.cjs — validates rendered kjobs chart manifests against the Kubernetes OpenAPI
// schemas offline, using the JSON-schema validators generated into the npm packages
// kubernetes-models (core/apps/batch/policy/autoscaling), @kubernetes-models/keda (ScaledObject,
// TriggerAuthentication) and @kubernetes-models/prometheus-operator (ServiceMonitor).
//
// Usage: node validate_openapi.cjs NODE_MODULES_DIR < manifests.json
//   manifests.json: {"<value set>": [manifest, ...], ...}
// Prints one line per manifest; exits 1 if any manifest is invalid or of a kind it cannot check.
// Limit: these schemas check types, required fields and formats, not unknown fields (Kubernetes'
// OpenAPI does not forbid additional properties); check_chart.py asserts the fields that matter.
'use strict';
const path = require('path');
const fs = require('fs');

const modulesDir = process.argv[2];
if (!modulesDir || !fs.existsSync(path.join(modulesDir, 'kubernetes-models'))) {
  console.error(`validate_openapi: kubernetes-models not found under ${modulesDir}; ` +
    'install it with: npm install --prefix .deps/node kubernetes-models@5 ' +
    '@kubernetes-models/keda@2 @kubernetes-models/prometheus-operator@6');
  process.exit(1);
}

function modulePath(apiVersion, kind) {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  if (group === '') return path.join(modulesDir, 'kubernetes-models', version, kind);
  if (group === 'keda.sh') return path.join(modulesDir, '@kubernetes-models/keda', group, version, kind);
  if (group === 'monitoring.coreos.com')
    return path.join(modulesDir, '@kubernetes-models/prometheus-operator', group, version, kind);
  return path.join(modulesDir, 'kubernetes-models', group, version, kind);
}

const sets = JSON.parse(fs.readFileSync(0, 'utf8'));
let failed = 0, checked = 0;
for (const [set, manifests] of Object.entries(sets)) {
  for (const m of manifests) {
    const id = `${set}: ${m.apiVersion} ${m.kind} ${m.metadata && m.metadata.name}`;
    let Model;
    try {
      Model = require(modulePath(m.apiVersion, m.kind))[m.kind];
    } catch (e) {
      console.log(`FAIL ${id}: no schema for this kind (${e.code || e.message})`);
      failed++;
      continue;
    }
    try {
      new Model(m).validate();
      console.log(`ok   ${id}`);
      checked++;
    } catch (e) {
      const details = (e.errors || []).map((x) => `${x.instancePath} ${x.message || x.keyword}`).join('; ');
      console.log(`FAIL ${id}: ${e.message}${details ? ' — ' + details : ''}`);
      failed++;
    }
  }
}
console.log(`openapi: ${checked} manifests valid, ${failed} invalid`);
process.exit(failed || checked === 0 ? 1 : 0);
