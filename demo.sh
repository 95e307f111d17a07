#!/usr/bin/env bash
# The demo: two yavipin peers in two network namespaces, pinging each other through the
# tunnel over IPv4 and IPv6, then a clean teardown. Needs root (namespaces, tun devices).
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" != 0 ]; then
    echo "demo.sh: needs root (network namespaces and tun devices)" >&2
    exit 1
fi
if ! command -v ip >/dev/null || ! command -v ping >/dev/null; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2 iputils-ping >/dev/null
fi
id -u yavipin >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin yavipin

echo "== building (release)"
cargo build --release --locked -q -p yavipin-parent -p yavipin-cli
bin="${CARGO_TARGET_DIR:-target}/release"

work=$(mktemp -d)
ns_a=yvdemo-a-$$
ns_b=yvdemo-b-$$
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== two hosts: $ns_a (198.18.0.1) and $ns_b (198.18.0.2), joined by a veth pair"
ip netns add "$ns_a"
ip netns add "$ns_b"
ip link add yvdemo-a netns "$ns_a" type veth peer name yvdemo-b netns "$ns_b"
ip -n "$ns_a" address add 198.18.0.1/24 dev yvdemo-a
ip -n "$ns_b" address add 198.18.0.2/24 dev yvdemo-b
for ns in "$ns_a" "$ns_b"; do
    ip -n "$ns" link set lo up
done
ip -n "$ns_a" link set yvdemo-a up
ip -n "$ns_b" link set yvdemo-b up

echo "== one shared key, two small configurations"
"$bin/yavipin" genkey "$work/demo.key"
cat >"$work/a.toml" <<EOF
key_file = "$work/demo.key"
[interface]
name = "yvdemo-a0"
addresses = ["10.99.0.1/30", "fd99::1/64"]
[transport]
listen = "0.0.0.0:5555"
EOF
cat >"$work/b.toml" <<EOF
key_file = "$work/demo.key"
[interface]
name = "yvdemo-b0"
addresses = ["10.99.0.2/30", "fd99::2/64"]
[transport]
listen = "0.0.0.0:5555"
peer = "198.18.0.1:5555"
EOF
cat "$work/b.toml"

echo "== starting yavipind on both hosts"
ip netns exec "$ns_a" "$bin/yavipind" -c "$work/a.toml" 2>"$work/a.log" &
pids+=($!)
ip netns exec "$ns_b" "$bin/yavipind" -c "$work/b.toml" 2>"$work/b.log" &
pids+=($!)

# Wait for both daemons to report the tunnel up (at most 20 s).
for _ in $(seq 200); do
    if grep -q "tunnel up" "$work/a.log" && grep -q "tunnel up" "$work/b.log"; then break; fi
    sleep 0.1
done
sed 's/^/  a: /' "$work/a.log"
sed 's/^/  b: /' "$work/b.log"
if ! grep -q "tunnel up" "$work/a.log" || ! grep -q "tunnel up" "$work/b.log"; then
    echo "demo: tunnel did not come up" >&2
    exit 1
fi

echo "== ping through the tunnel"
ip netns exec "$ns_b" ping -c 3 -W 1 10.99.0.1
ip netns exec "$ns_a" ping -c 3 -W 1 10.99.0.2
ip netns exec "$ns_b" ping -6 -c 3 -W 1 fd99::1

echo "== the tunnel's state on $ns_b"
"$bin/yavipin" show yvdemo-b0
ip -n "$ns_b" -s link show yvdemo-b0

echo "== teardown"
cleanup
trap - EXIT
echo "demo: done"
