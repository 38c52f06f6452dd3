#!/usr/bin/env node
// fedge-specific checks of a rendered chart (the output of `helm template`), beyond the schemas:
//   - every flag passed to fedge-cloud (container args and the --flagfile in its ConfigMap) and
//     to fedge-edge is one the binary defines, read from the ABSL_FLAG lines of its sources;
//   - the flag file holds only flags and comments, as absl's --flagfile requires;
//   - probes are HTTP GET /healthz on the plaintext metrics port;
//   - pods run as uid 10001 with a read-only root, no privilege escalation, no capabilities,
//     the RuntimeDefault seccomp profile and an emptyDir on /tmp;
//   - the metrics Service carries fedge.io/scrape-job=fedge-cloud and a ServiceMonitor, if any,
//     takes the job name from that label;
//   - a PrometheusRule, if any, carries exactly the groups of helm/fedge/rules/fedge-alerts.yaml;
//   - a PodDisruptionBudget, if any, has maxUnavailable 1.
//
//   helm template ... | node chart_checks.js SOURCE_ROOT [FILE|-]
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { createRequire } = require('module');

const cache = process.env.FEDGE_TOOLS_CACHE || path.join(os.homedir(), '.cache', 'fedge-tools');
const YAML = createRequire(path.join(cache, 'npm', 'package.json'))('yaml');

const [root, file = '-'] = process.argv.slice(2);
if (!root) {
  process.stderr.write('usage: node chart_checks.js SOURCE_ROOT [FILE|-]\n');
  process.exit(2);
}

// Flags absl's ParseCommandLine handles itself.
const ABSL_BUILTIN = ['flagfile', 'fromenv', 'tryfromenv', 'undefok'];

function flagsDefinedIn(...files) {
  const names = new Set(ABSL_BUILTIN);
  for (const f of files) {
    const text = fs.readFileSync(path.join(root, f), 'utf8');
    for (const m of text.matchAll(/ABSL_FLAG\(\s*[^,]+,\s*(\w+)\s*,/g)) names.add(m[1]);
  }
  return names;
}

const ACCEPTED = {
  'fedge-cloud': flagsDefinedIn('cloud/main.cc', 'common/app/app.cc'),
  'fedge-edge': flagsDefinedIn('edge/main.cc', 'common/app/app.cc'),
};

const failures = [];
const fail = (what, message) => failures.push(`${what}: ${message}`);

function checkFlag(binary, what, arg) {
  const m = /^--([A-Za-z0-9_]+)(=|$)/.exec(arg);
  if (!m) {
    fail(what, `argument ${JSON.stringify(arg)} is not a --flag`);
  } else if (!ACCEPTED[binary].has(m[1])) {
    fail(what, `${binary} has no flag --${m[1]}`);
  }
}

// JSON with object keys sorted, so that equal YAML compares equal whatever its key order.
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

const docs = YAML.parseAllDocuments(fs.readFileSync(file === '-' ? 0 : file, 'utf8'))
  .map((d) => d.toJS())
  .filter((o) => o && typeof o === 'object');
const name = (o) => `${o.kind}/${o.metadata.name}`;

function checkPod(owner, podSpec) {
  const what = name(owner);
  const psc = podSpec.securityContext || {};
  if (psc.runAsNonRoot !== true) fail(what, 'pod securityContext.runAsNonRoot is not true');
  if (psc.runAsUser !== 10001) fail(what, 'pod securityContext.runAsUser is not 10001');
  if (psc.fsGroup === undefined) fail(what, 'pod securityContext.fsGroup is not set');
  const tmpVolumes = new Set((podSpec.volumes || []).filter((v) => v.emptyDir).map((v) => v.name));

  for (const c of podSpec.containers) {
    const cwhat = `${what} container ${c.name}`;
    const sc = c.securityContext || {};
    if (sc.readOnlyRootFilesystem !== true) fail(cwhat, 'readOnlyRootFilesystem is not true');
    if (sc.allowPrivilegeEscalation !== false) fail(cwhat, 'allowPrivilegeEscalation is not false');
    const drop = (sc.capabilities && sc.capabilities.drop) || [];
    if (!drop.includes('ALL')) fail(cwhat, 'capabilities do not drop ALL');
    const seccomp = (sc.seccompProfile || psc.seccompProfile || {}).type;
    if (seccomp !== 'RuntimeDefault') fail(cwhat, 'seccompProfile is not RuntimeDefault');
    const tmp = (c.volumeMounts || []).find((m) => m.mountPath === '/tmp');
    if (!tmp || !tmpVolumes.has(tmp.name)) fail(cwhat, '/tmp is not an emptyDir');

    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      const get = c[probe] && c[probe].httpGet;
      if (!get || get.path !== '/healthz' || get.port !== 'metrics') {
        fail(cwhat, `${probe} is not HTTP GET /healthz on the metrics port`);
      }
    }
    if (!(c.name in ACCEPTED)) {
      fail(cwhat, 'unknown container; expected fedge-cloud or fedge-edge');
      continue;
    }
    for (const arg of c.args || []) checkFlag(c.name, cwhat, arg);
  }
}

let metricsServices = 0;
for (const o of docs) {
  const what = name(o);
  const labels = o.metadata.labels || {};
  if (o.kind === 'StatefulSet' || o.kind === 'DaemonSet') checkPod(o, o.spec.template.spec);
  if (o.kind === 'ConfigMap' && o.data && o.data['fedge-cloud.flags'] !== undefined) {
    for (const line of o.data['fedge-cloud.flags'].split('\n')) {
      const text = line.trim();
      if (text === '' || text.startsWith('#')) continue;
      checkFlag('fedge-cloud', `${what} fedge-cloud.flags`, text);
    }
  }
  if (o.kind === 'Service' && (o.spec.ports || []).some((p) => p.targetPort === 'metrics')) {
    metricsServices += 1;
    if (labels['fedge.io/scrape-job'] !== 'fedge-cloud') {
      fail(what, 'the metrics Service lacks the label fedge.io/scrape-job: fedge-cloud');
    }
  }
  if ((o.kind === 'ServiceMonitor' || o.kind === 'PodMonitor') &&
      o.spec.jobLabel !== 'fedge.io/scrape-job') {
    fail(what, 'jobLabel is not fedge.io/scrape-job');
  }
  if (o.kind === 'DaemonSet' &&
      o.spec.template.metadata.labels['fedge.io/scrape-job'] !== 'fedge-edge') {
    fail(what, 'the edge pods lack the label fedge.io/scrape-job: fedge-edge');
  }
  if (o.kind === 'PrometheusRule') {
    const rulesFile = path.join(root, 'helm/fedge/rules/fedge-alerts.yaml');
    const expected = YAML.parse(fs.readFileSync(rulesFile, 'utf8')).groups;
    if (canonical(o.spec.groups) !== canonical(expected)) {
      fail(what, 'spec.groups differ from the groups of helm/fedge/rules/fedge-alerts.yaml');
    }
  }
  if (o.kind === 'PodDisruptionBudget' && o.spec.maxUnavailable !== 1) {
    fail(what, 'maxUnavailable is not 1');
  }
}
if (metricsServices !== 1) fail('chart', `expected one metrics Service, found ${metricsServices}`);

if (failures.length > 0) {
  for (const f of failures) process.stderr.write(`FAIL ${f}\n`);
  process.exit(1);
}
process.stdout.write(`chart_checks.js: ${docs.length} objects pass the fedge checks\n`);
