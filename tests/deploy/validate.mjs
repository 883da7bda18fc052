// Validates every Kubernetes object of a rendered manifest (JSON list on stdin) with the
// kubernetes-models packages (the API's own OpenAPI schemas). Prints one line per object;
// exits 1 on the first invalid or unknown one.
import { readFileSync } from "node:fs";
import * as core from "kubernetes-models/v1";
import * as apps from "kubernetes-models/apps/v1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const kinds = {
  v1: core,
  "apps/v1": apps,
  "monitoring.coreos.com/v1": monitoring,
};
const objects = JSON.parse(readFileSync(0, "utf8"));
let bad = 0;
for (const o of objects) {
  const Model = kinds[o.apiVersion]?.[o.kind];
  const name = `${o.apiVersion} ${o.kind} ${o.metadata?.name}`;
  if (!Model) {
    console.log(`UNKNOWN ${name}`);
    bad++;
    continue;
  }
  try {
    new Model(o).validate();
    console.log(`valid ${name}`);
  } catch (e) {
    console.log(`INVALID ${name}: ${e.message}`);
    bad++;
  }
}
process.exit(bad ? 1 : 0);
