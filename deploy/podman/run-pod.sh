#!/usr/bin/env bash
# Run the pod of deploy/kubernetes/ for real with podman (docs/KUBERNETES.md, "Run it with
# podman"): the image built from deploy/Containerfile, the classic-sidecar Deployment's pod
# played by `podman kube play` with the sidecar as uid 10001 and the app as uid 10002, a fake
# Coactive on 127.0.0.1 (--network host), the app reading the token through the sh shim, the
# Python shim and the token file, a Secret rotation picked up, and a clean stop.
#
#   sudo deploy/podman/run-pod.sh          (root: podman, mmdebstrap and unshare need it)
#
# Needs podman, mmdebstrap, catatonit (.ci/setup installs them). No registry is needed: the
# base image is a Debian rootfs made by mmdebstrap, kept in $COACTIVE_POD_CACHE (default
# ~/.cache/coactive-credd-pod) and in podman's store between runs. Exit 0 when every check
# passed; otherwise one line saying which failed, and the pod's logs.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
self="$root/deploy/podman/run-pod.sh"

# crun refuses hybrid cgroups: hide the unified hierarchy in a private mount namespace.
if [ -z "${COACTIVE_POD_UNSHARED:-}" ] && mountpoint -q /sys/fs/cgroup/unified 2>/dev/null; then
  exec unshare -m --propagation private env COACTIVE_POD_UNSHARED=1 \
    sh -c 'umount /sys/fs/cgroup/unified && exec "$0" "$@"' "$self" "$@"
fi

cache=${COACTIVE_POD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coactive-credd-pod}
work=$(mktemp -d /tmp/coactive-pod.XXXXXX)
chmod 755 "$work"
fake_pid=""
pod=coactive-pod-$$
cleanup() {
  podman pod rm -f -t 2 "$pod" >/dev/null 2>&1 || true
  [ -n "$fake_pid" ] && kill "$fake_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '%s run-pod: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
fail() { say "FAILED: $*"; podman logs "$pod-coactive-credd" 2>&1 | sed 's/^/  sidecar| /' | tail -20 || true; podman logs "$pod-app" 2>&1 | sed 's/^/  app| /' | tail -20 || true; exit 1; }
t0=$(date +%s)

# Facts of these machines: no CAP_SYS_RESOURCE (podman's default rlimits fail), hybrid cgroups.
cat >"$work/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF="$work/containers.conf"

# 1. Images: the rootfs (cached), the base with the CA bundle, the product from this tree.
if ! podman image exists localhost/coactive-credd-rootfs:bookworm; then
  mkdir -p "$cache"
  if [ ! -s "$cache/rootfs.tar" ]; then
    say "mmdebstrap: a Debian bookworm rootfs (about 30 s, once)"
    mmdebstrap --quiet --variant=minbase \
      --include=python3,python3-venv,python3-pip,ca-certificates,curl \
      bookworm "$cache/rootfs.tar.part"
    mv "$cache/rootfs.tar.part" "$cache/rootfs.tar"
  fi
  podman import -q "$cache/rootfs.tar" localhost/coactive-credd-rootfs:bookworm >/dev/null
fi
mkdir "$work/base"
cp /etc/ssl/certs/ca-certificates.crt "$work/base/"
podman build -q -f "$root/deploy/podman/Containerfile.base" -t localhost/coactive-credd-base:bookworm "$work/base" >/dev/null
say "building the image from deploy/Containerfile"
podman build -q --from localhost/coactive-credd-base:bookworm -f "$root/deploy/Containerfile" \
  -t localhost/coactive-credd:pod "$root" >/dev/null || fail "the image did not build"
t_images=$(date +%s)

# 2. A fake Coactive on 127.0.0.1 that knows the first and the rotated credential.
first="cpt_pod-first-$$-$RANDOM" rotated="cpt_pod-rotated-$$-$RANDOM"
PYTHONPATH="$root/daemon:$root/client_shim/python" python3 -m coactive_credd.testing.fakeupstream \
  --personal-token "$first" --personal-token "$rotated" >"$work/fake.url" 2>"$work/fake.log" &
fake_pid=$!
for _ in $(seq 100); do [ -s "$work/fake.url" ] && break; sleep 0.1; done
base_url=$(head -1 "$work/fake.url")
[ -n "$base_url" ] || fail "the fake Coactive did not start"
ledger() { curl -s --noproxy '*' "$base_url/_fake/ledger"; }

# 3. The pod: the classic-sidecar Deployment, its Secret laid out as the kubelet lays it out
#    (..data swapped at each rotation), its ConfigMap pointed at the fake, the emptyDir a
#    root-owned sticky folder (as a medium: Memory emptyDir is).
atomic_put() {  # the kubelet's AtomicWriter: FOLDER KEY MODE; a new timestamped folder, ..data swapped
  local n="..$(date -u +%Y_%m_%d_%H_%M_%S).$RANDOM"
  mkdir "$1/$n"
  cat >"$1/$n/$2"
  chgrp 10000 "$1/$n/$2"
  chmod "$3" "$1/$n/$2"
  [ -L "$1/$2" ] || ln -s "..data/$2" "$1/$2"
  ln -sfn "$n" "$1/..data_tmp"
  mv -T "$1/..data_tmp" "$1/..data"
}
secret_put() { printf '%s\n' "$1" | atomic_put "$work/secret" secret 0440; }
mkdir -m 0755 "$work/secret" "$work/config"
secret_put "$first"
mkdir -m 1777 "$work/run"
python3 - "$root" "$work" "$base_url" "$pod" <<'PY'
import os, sys, yaml
root, work, base_url, pod = sys.argv[1:5]
config = yaml.safe_load(open(f"{root}/deploy/kubernetes/configmap.yaml"))["data"]["config.toml"]
config = config.replace('base_url = "https://api.coactive.ai"', f'base_url = "{base_url}"')
config = config.replace('auth = "client_credentials"', 'auth = "personal_token"')
config = config.replace('client_id = "REPLACE-WITH-THE-CLIENT-ID"\n', "")
assert base_url in config and "personal_token" in config, "the ConfigMap changed shape"
with open(f"{work}/config.toml", "w") as f:
    f.write(config)
dep = yaml.safe_load(open(f"{root}/deploy/kubernetes/deployment-classic.yaml"))
spec = dep["spec"]["template"]["spec"]
APP = r'''
trap 'exit 0' TERM  # the container's first process: no default action for SIGTERM
t0=""
while true; do
  s=$(coactive-token 2>/dev/null) || s=""
  p=$(python3 -c "import coactive_token as c; print(c.Client(autostart=False).token().access_token)" 2>/dev/null) || p=""
  f=$(cat "$COACTIVE_ACCESS_TOKEN_FILE" 2>/dev/null) || f=""
  if [ -n "$s" ] && [ "$s" = "$p" ] && [ "$p" = "$f" ] && [ "$s" != "$t0" ]; then
    echo "app uid $(id -u): one token by sh shim, python shim and file: $s"
    t0=$s
  fi
  sleep 0.5
done
'''
for c in spec["containers"]:
    c["image"] = "localhost/coactive-credd:pod"
    c.pop("readinessProbe", None); c.pop("livenessProbe", None)  # podman 4.3 runs them via systemd
    if c["name"] == "app":  # the script from a file: podman 4.3 chokes on it inline
        c["command"] = ["sh", "/pod-app/app.sh"]
        c["volumeMounts"].append({"name": "pod-app", "mountPath": "/pod-app", "readOnly": True})
os.makedirs(f"{work}/app", mode=0o755)
with open(f"{work}/app/app.sh", "w") as f:
    f.write(APP)
spec["volumes"].append({"name": "pod-app", "hostPath": {"path": f"{work}/app", "type": "Directory"}})
vols = {v["name"]: v for v in spec["volumes"]}
vols["coactive-run"].clear(); vols["coactive-run"].update(name="coactive-run", hostPath={"path": f"{work}/run", "type": "Directory"})
vols["coactive-credentials"].clear(); vols["coactive-credentials"].update(name="coactive-credentials", hostPath={"path": f"{work}/secret", "type": "Directory"})
vols["coactive-config"].clear(); vols["coactive-config"].update(name="coactive-config", hostPath={"path": f"{work}/config", "type": "Directory"})
spec.pop("securityContext", {}).pop("fsGroup", None)
spec["securityContext"] = dep["spec"]["template"]["spec"].get("securityContext") or {"runAsNonRoot": True, "runAsGroup": 10000}
spec["securityContext"]["runAsGroup"] = 10000
spec["securityContext"].pop("seccompProfile", None)
spec["restartPolicy"] = "Never"
pod_doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod}, "spec": spec}
class Indented(yaml.SafeDumper):  # sequences indented under their key, as podman's parser wants
    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)
with open(f"{work}/pod.yaml", "w") as f:
    yaml.dump(pod_doc, f, Dumper=Indented, sort_keys=False, width=1 << 20)
PY
atomic_put "$work/config" config.toml 0444 <"$work/config.toml"  # laid out as a ConfigMap volume
say "podman kube play (the classic-sidecar Deployment's pod, --network host)"
podman kube play --network host "$work/pod.yaml" >"$work/play.log" 2>&1 || { cat "$work/play.log"; cp "$work/pod.yaml" /tmp/coactive-pod-failed.yaml; fail "podman kube play"; }

# 4. The app gets a token by all three ways; it is one the fake issued.
wait_app() {  # a token, by all three ways, that the fake issued for credential $1
  local want_cred=$1 n=0
  while [ $n -lt 120 ]; do
    got=$(podman logs "$pod-app" 2>/dev/null | sed -n 's/.*python shim and file: //p' | tail -1)
    if [ -n "$got" ] && ledger | python3 -c '
import json, sys, hashlib
got, cred = sys.argv[1], sys.argv[2]
issued = json.load(sys.stdin)["issued"]
sys.exit(0 if any(i["access_token"] == got and i["credential"] == cred for i in issued) else 1)' "$got" "$want_cred"; then
      return 0
    fi
    n=$((n + 1)); sleep 0.5
  done
  return 1
}
cred() { printf '%s' "$1" | sha256sum | cut -c1-16; }
wait_app "$(cred "$first")" || fail "the app got no token by the sh shim, the Python shim and the file"
podman logs "$pod-app" 2>/dev/null | grep -q "app uid 10002:" || fail "the app did not run as uid 10002"
podman exec "$pod-coactive-credd" id -u | grep -qx 10001 || fail "the sidecar does not run as uid 10001"
say "the app (uid 10002) got the sidecar's (uid 10001) token by sh shim, Python shim and file"
t_first=$(date +%s)

# 5. A Secret rotation is picked up: the next token is the rotated credential's.
secret_put "$rotated"
wait_app "$(cred "$rotated")" || fail "the Secret rotation was not picked up"
say "the rotated Secret was picked up: the app reads the new credential's token"
t_rotated=$(date +%s)

# 6. The pod stops cleanly: the sidecar exits 0 on SIGTERM and removes its token file.
podman pod stop -t 10 "$pod" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "$pod-coactive-credd")
[ "$code" = 0 ] || fail "the sidecar exited $code on SIGTERM"
[ ! -e "$work/run/credd/token" ] || fail "the token file outlived the sidecar"
podman logs "$pod-coactive-credd" 2>&1 | grep -q "$first\|$rotated" && fail "a credential appeared in the sidecar's log"
t_end=$(date +%s)
say "the pod stopped cleanly"
say "OK in $((t_end - t0)) s (images $((t_images - t0)) s, first token $((t_first - t_images)) s, rotation $((t_rotated - t_first)) s, stop $((t_end - t_rotated)) s)"
