// Offline checks of docker/k8s (no cluster, no kubectl): renders every overlay the way
// `kubectl kustomize` would for the features docker/k8s uses (kustomize.mjs), then
//   1. schema: every object against its OpenAPI schema (kubernetes-models' validate(); the
//      Prometheus Operator's models for ServiceMonitor);
//   2. fields: no field the API does not know (TypeScript's excess-property check against the
//      same models' types: validate() lets unknown fields through, the API server does not);
//   3. restricted: the Pod Security Standard "restricted" fields on every pod template;
//   4. chorusd: the rules that tie the manifests to the server configuration (CPU = threads,
//      termination covers the drain, probe and metrics ports, secrets mounted, HPA metrics,
//      selectors, GPU overlay consistent with backend "cuda"; config fields exist in
//      proto/chorus/v1/config.proto).
// Usage: node check-k8s.mjs [--print OVERLAY]   (scripts/check-k8s.sh installs the packages)
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";
import { objectId, render } from "./kustomize.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const K8S = path.join(ROOT, "docker/k8s");
const OVERLAYS = fs.readdirSync(path.join(K8S, "overlays")).sort();

// --print OVERLAY: the rendered YAML, like `kubectl kustomize docker/k8s/overlays/OVERLAY`.
const printAt = process.argv.indexOf("--print");
if (printAt >= 0) {
  const objects = render(path.join(K8S, "overlays", process.argv[printAt + 1] ?? ""));
  process.stdout.write(objects.map((o) => YAML.stringify(o)).join("---\n"));
  process.exit(0);
}

let passed = 0;
let failed = 0;
function check(ok, what) {
  if (ok) {
    passed++;
  } else {
    failed++;
    console.log(`  FAIL ${what}`);
  }
  return ok;
}

// ---- 1. schema -------------------------------------------------------------------------------
const THIRD_PARTY = { "monitoring.coreos.com": "@kubernetes-models/prometheus-operator" };

function modelModule(o) {
  const [group, version] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : ["", o.apiVersion];
  if (!group) return `kubernetes-models/${version}/${o.kind}`;
  return `${THIRD_PARTY[group] ?? "kubernetes-models"}/${group}/${version}/${o.kind}`;
}

async function checkSchema(overlay, o) {
  let Model;
  try {
    Model = (await import(modelModule(o)))[o.kind];
  } catch {
    return check(false, `${overlay}: ${objectId(o)}: no model for ${o.apiVersion} ${o.kind}`);
  }
  try {
    new Model(o).validate();
    return check(true);
  } catch (e) {
    const errors = (e.errors ?? [{ message: e.message }]).map((x) => `${x.instancePath ?? ""} ${x.message}`);
    return check(false, `${overlay}: ${objectId(o)}: schema: ${errors.join("; ")}`);
  }
}

// ---- 2. fields (TypeScript excess-property check) --------------------------------------------
function checkKnownFields(rendered) {
  const dir = path.join(HERE, ".typecheck");
  fs.mkdirSync(dir, { recursive: true });
  const lines = [];
  const owner = [];  // generated line -> "overlay: Kind/name"
  rendered.forEach(({ overlay, objects }) => {
    for (const o of objects) {
      const module = modelModule(o);
      const type = `I${o.kind}`;
      const alias = `T${lines.length}`;
      const body = JSON.stringify(o, null, 2).split("\n");
      lines.push(`import type { ${type} as ${alias} } from "${module}";`);
      owner.push(`${overlay}: ${objectId(o)}`);
      lines.push(`export const v${lines.length}: ${alias} = ${body[0]}`, ...body.slice(1));
      for (let i = 0; i < body.length; i++) owner.push(`${overlay}: ${objectId(o)}`);
      lines.push(";");
      owner.push("");
    }
  });
  const file = path.join(dir, "rendered.ts");
  fs.writeFileSync(file, lines.join("\n") + "\n");
  let output = "";
  try {
    execFileSync(process.execPath, [
      path.join(HERE, "node_modules/typescript/bin/tsc"), "--noEmit", "--strict", "--skipLibCheck",
      "--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022", file,
    ], { encoding: "utf8" });
  } catch (e) {
    output = `${e.stdout ?? ""}${e.stderr ?? ""}`;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const errors = output.split("\n").filter((l) => l.includes("error TS"));
  for (const e of errors) {
    const line = Number(/\((\d+),\d+\)/.exec(e)?.[1] ?? 0);
    check(false, `${owner[line - 1] ?? "?"}: ${e.replace(/^.*error TS\d+: /, "")}`);
  }
  if (!errors.length) check(true);
  return errors.length;
}

// ---- 3. restricted Pod Security Standard -----------------------------------------------------
const RESTRICTED_VOLUMES = new Set([
  "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
]);

function podSpecOf(o) {
  switch (o.kind) {
    case "Pod": return o.spec;
    case "CronJob": return o.spec?.jobTemplate?.spec?.template?.spec;
    case "Deployment": case "StatefulSet": case "DaemonSet": case "ReplicaSet": case "Job":
      return o.spec?.template?.spec;
    default: return undefined;
  }
}

function checkRestricted(id, pod) {
  const psc = pod.securityContext ?? {};
  check(!pod.hostNetwork && !pod.hostPID && !pod.hostIPC, `${id}: host namespaces`);
  for (const v of pod.volumes ?? []) {
    const type = Object.keys(v).find((k) => k !== "name");
    check(RESTRICTED_VOLUMES.has(type), `${id}: volume ${v.name} of type ${type}`);
  }
  const containers = [...(pod.initContainers ?? []), ...(pod.containers ?? []), ...(pod.ephemeralContainers ?? [])];
  check(containers.length > 0, `${id}: no containers`);
  for (const c of containers) {
    const sc = c.securityContext ?? {};
    const where = `${id} container ${c.name}`;
    check((sc.runAsNonRoot ?? psc.runAsNonRoot) === true, `${where}: runAsNonRoot must be true`);
    check((sc.runAsUser ?? psc.runAsUser) === 10001, `${where}: runAsUser must be 10001 (the image's user)`);
    const seccomp = (sc.seccompProfile ?? psc.seccompProfile)?.type;
    check(seccomp === "RuntimeDefault" || seccomp === "Localhost", `${where}: seccompProfile RuntimeDefault`);
    check(sc.allowPrivilegeEscalation === false, `${where}: allowPrivilegeEscalation must be false`);
    check(sc.privileged !== true, `${where}: privileged`);
    check((sc.capabilities?.drop ?? []).includes("ALL"), `${where}: capabilities must drop ALL`);
    check((sc.capabilities?.add ?? []).every((cap) => cap === "NET_BIND_SERVICE"), `${where}: capabilities added`);
    check(sc.readOnlyRootFilesystem === true, `${where}: readOnlyRootFilesystem must be true`);
    check((c.ports ?? []).every((p) => !p.hostPort), `${where}: hostPort`);
  }
}

// ---- 4. chorusd rules ------------------------------------------------------------------------
function protoFields() {
  const proto = fs.readFileSync(path.join(ROOT, "proto/chorus/v1/config.proto"), "utf8");
  const body = proto.slice(proto.indexOf("message ServerConfig"));
  return new Set([...body.matchAll(/^\s*(?:optional\s+|repeated\s+)?[\w.]+\s+(\w+)\s*=\s*\d+\s*;/gm)].map((m) => m[1]));
}
const CONFIG_FIELDS = protoFields();

// The text-format subset the configs use: `field: value  # comment`, value a number, a quoted
// string, true/false or a [list].
function parsePbtxt(text, where) {
  const config = {};
  for (const raw of text.split("\n")) {
    const m = /^\s*(\w+)\s*:\s*("(?:[^"\\]|\\.)*"|\[[^\]]*\]|[^\s#]+)\s*(#.*)?$/.exec(raw);
    if (!m) {
      check(/^\s*(#.*)?$/.test(raw), `${where}: cannot read line '${raw.trim()}'`);
      continue;
    }
    const [, field, value] = m;
    check(CONFIG_FIELDS.has(field), `${where}: ${field} is not a ServerConfig field (config.proto)`);
    config[field] = value.startsWith('"') ? JSON.parse(value)
      : value.startsWith("[") ? JSON.parse(value)
        : value === "true" || value === "false" ? value === "true" : Number(value);
  }
  return config;
}

const portOf = (address) => Number(address?.slice(address.lastIndexOf(":") + 1));
const labelsMatch = (selector, labels) =>
  Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v) && Object.keys(selector ?? {}).length > 0;
const cpuCores = (q) => (typeof q === "string" && q.endsWith("m") ? Number(q.slice(0, -1)) / 1000 : Number(q));

function checkChorusd(overlay, objects) {
  const find = (kind) => objects.filter((o) => o.kind === kind);
  const deployment = find("Deployment").find((d) => d.metadata.name === "chorusd");
  if (!check(deployment, `${overlay}: no Deployment/chorusd`)) return;
  const id = `${overlay}: Deployment/chorusd`;
  const pod = deployment.spec.template.spec;
  const podLabels = deployment.spec.template.metadata?.labels;
  const c = pod.containers.find((x) => x.name === "chorusd");
  if (!check(c, `${id}: no container chorusd`)) return;

  // The configuration the container reads: --config FILE in a ConfigMap volume.
  const configPath = c.args?.[c.args.indexOf("--config") + 1];
  const mountOf = (file) => (c.volumeMounts ?? []).find((m) => file?.startsWith(`${m.mountPath}/`));
  const volumeOf = (file) => pod.volumes?.find((v) => v.name === mountOf(file)?.name);
  const configVolume = volumeOf(configPath);
  const configMap = find("ConfigMap").find((m) => m.metadata.name === configVolume?.configMap?.name);
  const key = configPath?.slice(mountOf(configPath)?.mountPath.length + 1);
  if (!check(configMap?.data?.[key], `${id}: --config ${configPath} is not a key of a mounted ConfigMap`)) return;
  const config = parsePbtxt(configMap.data[key], `${overlay}: ConfigMap/${configMap.metadata.name}`);

  // Threads = CPU: request = limit = num_threads.
  const threads = config.num_threads;
  check(threads > 0, `${id}: num_threads must be set (0 = the node's cores, not the pod's)`);
  check(cpuCores(c.resources?.requests?.cpu) === threads && cpuCores(c.resources?.limits?.cpu) === threads,
    `${id}: cpu request and limit must equal num_threads ${threads}`);
  check(c.resources?.requests?.memory && c.resources?.limits?.memory, `${id}: memory request and limit`);

  // GPU overlay <-> backend "cuda".
  const gpus = Number(c.resources?.limits?.["nvidia.com/gpu"] ?? 0);
  check((config.backend === "cuda") === gpus > 0, `${id}: backend ${config.backend} with ${gpus} nvidia.com/gpu`);
  if (gpus > 0) {
    check((pod.tolerations ?? []).some((t) => t.key === "nvidia.com/gpu"), `${id}: nvidia.com/gpu toleration`);
    check(Object.keys(pod.nodeSelector ?? {}).some((k) => k.startsWith("nvidia.com/")), `${id}: GPU node selector`);
  }

  // Probes: grpc.health.v1 on the listen port.
  const grpcPort = portOf(config.listen_address);
  const named = (name) => c.ports?.find((p) => p.name === name)?.containerPort;
  check(named("grpc") === grpcPort, `${id}: container port grpc must be ${grpcPort} (listen_address)`);
  for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
    check(c[probe]?.grpc?.port === grpcPort, `${id}: ${probe} must be grpc on port ${grpcPort}`);
  }

  // Metrics: config port = container port = scrape annotation.
  const metricsPort = portOf(config.metrics_listen_address);
  check(named("metrics") === metricsPort, `${id}: container port metrics must be ${metricsPort}`);
  const annotations = deployment.spec.template.metadata?.annotations ?? {};
  check(annotations["prometheus.io/scrape"] === "true" && Number(annotations["prometheus.io/port"]) === metricsPort,
    `${id}: prometheus.io scrape annotations on port ${metricsPort}`);

  // Termination: preStop sleep + drain + 5 s margin fit the grace period.
  const preStop = c.lifecycle?.preStop;
  const sleep = preStop?.sleep?.seconds ?? Number(preStop?.exec?.command?.at(-1));
  const drain = (config.drain_timeout_ms ?? 20000) / 1000;
  check(sleep > 0, `${id}: a preStop sleep keeps the pod serving until its endpoints are gone`);
  check(pod.terminationGracePeriodSeconds >= sleep + drain + 5,
    `${id}: terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} < preStop ${sleep} s + drain ${drain} s + 5 s`);

  // Secrets: the token file (and TLS files, when set) come from mounted Secrets.
  for (const field of ["auth_token_path", "tls_cert_path", "tls_key_path"]) {
    if (config[field]) check(volumeOf(config[field])?.secret, `${id}: ${field} ${config[field]} is not in a Secret volume`);
  }
  check(config.auth_token_path, `${id}: auth_token_path must be set (bearer tokens)`);
  const secretNames = (pod.volumes ?? []).filter((v) => v.secret).map((v) => v.secret.secretName);
  check(secretNames.includes("chorusd-tls") && secretNames.includes("chorusd-auth-tokens"),
    `${id}: Secret volumes chorusd-tls and chorusd-auth-tokens`);
  check(pod.topologySpreadConstraints?.length > 0, `${id}: topology spread constraints`);

  // Services, headless Service, PDB, ServiceMonitor select these pods; the HPA targets them.
  const services = find("Service");
  for (const s of services) check(labelsMatch(s.spec.selector, podLabels), `${overlay}: Service/${s.metadata.name} selects no chorusd pod`);
  check(services.some((s) => s.spec.clusterIP === "None" && s.spec.ports.some((p) => p.port === grpcPort)),
    `${overlay}: a headless Service on the gRPC port (client-side round_robin)`);
  const metricsService = services.find((s) => s.spec.ports.some((p) => p.name === "metrics" && p.port === metricsPort));
  check(metricsService, `${overlay}: a Service with the metrics port`);
  for (const pdb of find("PodDisruptionBudget")) {
    check(labelsMatch(pdb.spec.selector?.matchLabels, podLabels), `${overlay}: PodDisruptionBudget/${pdb.metadata.name} selects no pod`);
  }
  check(find("PodDisruptionBudget").length === 1, `${overlay}: one PodDisruptionBudget`);
  const monitors = find("ServiceMonitor");
  check(monitors.length === 1 && labelsMatch(monitors[0].spec.selector?.matchLabels, metricsService?.metadata.labels)
    && monitors[0].spec.endpoints.some((e) => e.port === "metrics"), `${overlay}: ServiceMonitor on the metrics Service`);
  const hpa = find("HorizontalPodAutoscaler")[0];
  if (check(hpa, `${overlay}: no HorizontalPodAutoscaler`)) {
    check(hpa.spec.scaleTargetRef.kind === "Deployment" && hpa.spec.scaleTargetRef.name === "chorusd",
      `${overlay}: the HPA targets Deployment/chorusd`);
    const target = (name) => hpa.spec.metrics?.find((m) => m.pods?.metric?.name === name)?.pods.target.averageValue;
    check(target("chorus_waiting_agents"), `${overlay}: HPA on chorus_waiting_agents`);
    const kv = Number(target("chorus_kv_blocks_used"));
    check(kv > 0 && kv <= config.kv_num_blocks, `${overlay}: HPA on chorus_kv_blocks_used below kv_num_blocks ${config.kv_num_blocks}`);
  }
}

// ---- main ------------------------------------------------------------------------------------
const rendered = [];
for (const overlay of OVERLAYS) {
  let objects;
  try {
    objects = render(path.join(K8S, "overlays", overlay));
  } catch (e) {
    check(false, `${overlay}: render: ${e.message}`);
    continue;
  }
  rendered.push({ overlay, objects });
  const kinds = {};
  for (const o of objects) kinds[o.kind] = (kinds[o.kind] ?? 0) + 1;
  console.log(`overlay ${overlay}: ${objects.length} objects (${Object.entries(kinds).map(([k, n]) => `${k} ${n}`).join(", ")})`);
  let valid = 0;
  for (const o of objects) if (await checkSchema(overlay, o)) valid++;
  console.log(`  schema      ${valid}/${objects.length} objects valid`);
  const before = failed;
  const pods = objects.filter(podSpecOf);
  for (const o of pods) checkRestricted(`${overlay}: ${objectId(o)}`, podSpecOf(o));
  console.log(`  restricted  ${pods.length} pod template(s): ${failed === before ? "ok" : "FAILED"}`);
  const beforeChorusd = failed;
  checkChorusd(overlay, objects);
  console.log(`  chorusd     config, resources, probes, drain, secrets, metrics, HPA: ${failed === beforeChorusd ? "ok" : "FAILED"}`);
}
const unknown = checkKnownFields(rendered);
console.log(`fields: ${unknown ? `${unknown} unknown field(s)` : "no unknown field"} in ${rendered.reduce((n, r) => n + r.objects.length, 0)} objects (TypeScript against the models' types)`);
console.log(`k8s: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
