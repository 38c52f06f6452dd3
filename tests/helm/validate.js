#!/usr/bin/env node
// Validates a multi-document YAML stream of Kubernetes objects (the output of `helm template`)
// against the Kubernetes OpenAPI schemas carried by the kubernetes-models packages, and the
// Prometheus Operator's CRD schemas for ServiceMonitor, PodMonitor and PrometheusRule.
//
//   helm template fedge helm/fedge | node validate.js [options] [FILE]
//
// Reads FILE, or stdin when FILE is absent or "-". Options:
//   --present=Kind[,Kind...]  each kind must occur at least once;
//   --absent=Kind[,Kind...]   no kind listed may occur.
// Exits 1, naming each object's kind and name with its schema error, when an object is invalid,
// of a kind this script does not know, or when --present/--absent fail; 2 on bad usage or YAML.
//
// The packages come from tests/helm/setup.sh, in ${FEDGE_TOOLS_CACHE:-~/.cache/fedge-tools}/npm.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { createRequire } = require('module');

const cache = process.env.FEDGE_TOOLS_CACHE || path.join(os.homedir(), '.cache', 'fedge-tools');
const requireTool = createRequire(path.join(cache, 'npm', 'package.json'));

// The API groups the chart may render, and where their models live. Anything else is refused, so
// that a new kind in the chart comes with a validator.
const MODELS = {
  'v1': 'kubernetes-models/v1',
  'apps/v1': 'kubernetes-models/apps/v1',
  'policy/v1': 'kubernetes-models/policy/v1',
  'networking.k8s.io/v1': 'kubernetes-models/networking.k8s.io/v1',
  'monitoring.coreos.com/v1': '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1',
};

function usage(message) {
  process.stderr.write(`validate.js: ${message}\n` +
    'usage: node validate.js [--present=Kind,...] [--absent=Kind,...] [FILE|-]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const options = { present: [], absent: [], file: '-' };
  let files = 0;
  for (const arg of argv) {
    const m = /^--(present|absent)=(.*)$/.exec(arg);
    if (m) {
      options[m[1]].push(...m[2].split(',').filter(Boolean));
    } else if (arg.startsWith('--')) {
      usage(`unknown option ${arg}`);
    } else {
      options.file = arg;
      files += 1;
    }
  }
  if (files > 1) usage('at most one file');
  return options;
}

// Returns the model class for an object, or an error message.
function modelFor(apiVersion, kind) {
  const base = MODELS[apiVersion];
  if (!base) return { error: `unknown apiVersion ${apiVersion}` };
  if (!/^[A-Z][A-Za-z0-9]*$/.test(kind)) return { error: `malformed kind ${JSON.stringify(kind)}` };
  let mod;
  try {
    mod = requireTool(`${base}/${kind}`);
  } catch (e) {
    if (e.code === 'MODULE_NOT_FOUND' && e.message.includes(`${base}/${kind}`)) {
      return { error: `unknown kind ${kind} in ${apiVersion}` };
    }
    throw e;  // a missing package: setup.sh has not run
  }
  const Model = mod[kind];
  if (typeof Model !== 'function') return { error: `unknown kind ${kind} in ${apiVersion}` };
  return { Model };
}

function describe(obj, index) {
  const kind = (obj && obj.kind) || '<no kind>';
  const name = (obj && obj.metadata && obj.metadata.name) || '<no name>';
  return `document ${index} ${kind}/${name}`;
}

function main() {
  const options = parseArgs(process.argv.slice(2));
  const YAML = requireTool('yaml');
  const text = fs.readFileSync(options.file === '-' ? 0 : options.file, 'utf8');

  const failures = [];
  const kinds = new Map();
  let count = 0;
  YAML.parseAllDocuments(text).forEach((doc, i) => {
    const index = i + 1;
    if (doc.errors.length > 0) {
      process.stderr.write(`validate.js: document ${index} is not valid YAML: ${doc.errors[0].message}\n`);
      process.exit(2);
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) return;  // an empty document (a template that rendered nothing)
    if (typeof obj !== 'object' || Array.isArray(obj)) {
      failures.push(`document ${index}: not an object`);
      return;
    }
    count += 1;
    const what = describe(obj, index);
    const { Model, error } = modelFor(obj.apiVersion, obj.kind);
    if (error) {
      failures.push(`${what}: ${error}`);
      return;
    }
    kinds.set(obj.kind, (kinds.get(obj.kind) || 0) + 1);
    try {
      new Model(obj).validate();
    } catch (e) {
      failures.push(`${what} (${obj.apiVersion}): ${e.message}`);
    }
  });

  for (const kind of options.present) {
    if (!kinds.has(kind)) failures.push(`expected at least one ${kind}, found none`);
  }
  for (const kind of options.absent) {
    if (kinds.has(kind)) failures.push(`expected no ${kind}, found ${kinds.get(kind)}`);
  }
  if (count === 0) failures.push('no objects in the input');

  const summary = [...kinds.entries()].sort().map(([k, n]) => `${k}=${n}`).join(' ');
  if (failures.length > 0) {
    for (const f of failures) process.stderr.write(`FAIL ${f}\n`);
    process.stderr.write(`validate.js: ${failures.length} failure(s) in ${count} objects (${summary})\n`);
    process.exit(1);
  }
  process.stdout.write(`validate.js: ${count} objects valid (${summary})\n`);
}

main();
