// A small offline stand-in for `kubectl kustomize`, for the subset of kustomize that docker/k8s
// uses (Debian 12 packages neither kubectl nor kustomize):
//   resources   files (multi-document YAML) and directories with a kustomization.yaml
//   patches     `- path: FILE`, one object per file, applied to the object of the same kind and
//               metadata.name as a strategic merge patch (maps merge; the lists below merge by
//               their key; every other list, and every scalar, is replaced; null deletes)
//   namespace   set on every namespaced object; a Namespace object is renamed to it
// Any other kustomization field is an error, so a manifest never relies on a feature that this
// renderer would silently skip.
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";

const KUSTOMIZATION_FIELDS = new Set(["apiVersion", "kind", "resources", "patches", "namespace"]);
const CLUSTER_SCOPED = new Set([
  "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
  "PersistentVolume", "PriorityClass", "StorageClass", "IngressClass", "RuntimeClass",
]);

// Strategic-merge keys of the Kubernetes lists that carry one (see the API's
// x-kubernetes-patch-merge-key); `ports` is keyed by containerPort in a pod and by port in a
// Service.
const MERGE_KEYS = {
  containers: "name",
  initContainers: "name",
  ephemeralContainers: "name",
  volumes: "name",
  env: "name",
  imagePullSecrets: "name",
  volumeMounts: "mountPath",
  topologySpreadConstraints: "topologyKey",
};

function mergeKeyFor(field, items) {
  if (field === "ports") return items.some((p) => p && "containerPort" in p) ? "containerPort" : "port";
  return MERGE_KEYS[field];
}

const isMap = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

export function strategicMerge(base, patch, field = "") {
  if (isMap(base) && isMap(patch)) {
    const out = { ...base };
    for (const [k, v] of Object.entries(patch)) {
      if (v === null) delete out[k];
      else out[k] = strategicMerge(base[k], v, k);
    }
    return out;
  }
  if (Array.isArray(base) && Array.isArray(patch)) {
    const key = mergeKeyFor(field, [...base, ...patch]);
    if (key) {
      const out = base.map((item) => structuredClone(item));
      for (const item of patch) {
        const i = out.findIndex((b) => isMap(b) && isMap(item) && b[key] === item[key]);
        if (i >= 0) out[i] = strategicMerge(out[i], item, "");
        else out.push(structuredClone(item));
      }
      return out;
    }
  }
  return structuredClone(patch);
}

function readDocuments(file) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  const objects = [];
  for (const doc of docs) {
    if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0].message}`);
    const value = doc.toJS();
    if (value === null) continue;  // an empty document (a trailing ---)
    if (!isMap(value) || !value.kind || !value.metadata?.name) {
      throw new Error(`${file}: every document needs kind and metadata.name`);
    }
    objects.push(value);
  }
  return objects;
}

function readKustomization(dir) {
  const file = path.join(dir, "kustomization.yaml");
  if (!fs.existsSync(file)) throw new Error(`${dir}: no kustomization.yaml`);
  const k = YAML.parse(fs.readFileSync(file, "utf8")) ?? {};
  for (const field of Object.keys(k)) {
    if (!KUSTOMIZATION_FIELDS.has(field)) {
      throw new Error(`${file}: kustomize field '${field}' is not supported by tests/deploy/kustomize.mjs`);
    }
  }
  return { file, k };
}

export const objectId = (o) => `${o.kind}/${o.metadata.name}`;

// Renders the kustomization in `dir` to a list of plain objects, in resource order.
export function render(dir) {
  const { file, k } = readKustomization(dir);
  const objects = [];
  for (const entry of k.resources ?? []) {
    const target = path.resolve(dir, entry);
    const rendered = fs.statSync(target).isDirectory() ? render(target) : readDocuments(target);
    for (const o of rendered) {
      if (objects.some((x) => objectId(x) === objectId(o))) {
        throw new Error(`${file}: ${objectId(o)} is defined twice`);
      }
      objects.push(o);
    }
  }
  for (const p of k.patches ?? []) {
    if (!isMap(p) || Object.keys(p).join() !== "path") {
      throw new Error(`${file}: a patch must be '- path: FILE' (no inline patches, no targets)`);
    }
    const patchFile = path.resolve(dir, p.path);
    const docs = readDocuments(patchFile);
    if (docs.length !== 1) throw new Error(`${patchFile}: one object per patch file`);
    const patch = docs[0];
    const i = objects.findIndex((o) => objectId(o) === objectId(patch));
    if (i < 0) throw new Error(`${patchFile}: no ${objectId(patch)} to patch`);
    if (objects[i].apiVersion !== patch.apiVersion) {
      throw new Error(`${patchFile}: apiVersion ${patch.apiVersion} differs from ${objects[i].apiVersion}`);
    }
    objects[i] = strategicMerge(objects[i], patch);
  }
  if (k.namespace) {
    for (const o of objects) {
      if (o.kind === "Namespace") o.metadata.name = k.namespace;
      else if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
    }
  }
  return objects;
}
