#!/usr/bin/env bash
# Tunnel throughput side by side: the same two network namespaces and veth pair, one TCP
# stream of iperf3 through each tunnel in turn, both directions, several rounds.
#
#   plain         the veth pair itself, no tunnel (the ceiling of this machine)
#   yavipin       yavipind, release build (Blowfish-CFB64 + HMAC-MD5-96)
#   wireguard-go  WireGuard's own userspace implementation (ChaCha20-Poly1305)
#   openvpn-bf    OpenVPN, static key, BF-CBC + HMAC-MD5: the same primitives as yavipin
#
# Usage, as root: bench/throughput.sh [SECONDS_PER_RUN] [ROUNDS]   (defaults 10 and 3)
# Needs iperf3, wireguard-tools, wireguard-go and openvpn (installed with apt-get if
# missing). Prints one line per run, the median per tunnel and direction, and the resident
# memory of both sides' processes (yavipind: parent, netd and keyd) after the runs.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
rounds=${2:-3}
if [ "$(id -u)" != 0 ]; then
    echo "throughput.sh: needs root (network namespaces and tun devices)" >&2
    exit 1
fi
missing=0
for command in ip iperf3 wg wireguard-go openvpn; do
    command -v "$command" >/dev/null || missing=1
done
if [ "$missing" = 1 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        iproute2 iperf3 wireguard-tools wireguard-go openvpn >/dev/null
fi
id -u yavipin >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin yavipin
cargo build --release --locked -q -p yavipin-parent -p yavipin-cli
bin="${CARGO_TARGET_DIR:-target}/release"

work=$(mktemp -d)
ns_a=ytput-a-$$
ns_b=ytput-b-$$
pids=()
stop_tunnel() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
cleanup() {
    stop_tunnel
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns_a"
ip netns add "$ns_b"
ip link add ytput-a netns "$ns_a" type veth peer name ytput-b netns "$ns_b"
ip -n "$ns_a" address add 198.18.70.1/24 dev ytput-a
ip -n "$ns_b" address add 198.18.70.2/24 dev ytput-b
for ns in "$ns_a" "$ns_b"; do ip -n "$ns" link set lo up; done
ip -n "$ns_a" link set ytput-a up
ip -n "$ns_b" link set ytput-b up

# Waits until a ping from B reaches $1 (at most 20 s).
wait_for() {
    for _ in $(seq 40); do
        if ip netns exec "$ns_b" ping -c 1 -W 1 "$1" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "throughput.sh: $1 never answered" >&2
    exit 1
}

start_yavipin() {
    "$bin/yavipin" genkey "$work/yavipin.key" >/dev/null
    for side in a b; do
        local addr=10.77.0.1 peer=""
        if [ "$side" = b ]; then addr=10.77.0.2 peer='peer = "198.18.70.1:5555"'; fi
        cat >"$work/$side.toml" <<EOF
key_file = "$work/yavipin.key"
[interface]
name = "ytput-$side-yv"
addresses = ["$addr/30"]
[transport]
listen = "0.0.0.0:5555"
$peer
EOF
    done
    ip netns exec "$ns_a" "$bin/yavipind" -c "$work/a.toml" 2>"$work/yavipin-a.log" &
    pids+=($!)
    ip netns exec "$ns_b" "$bin/yavipind" -c "$work/b.toml" 2>"$work/yavipin-b.log" &
    pids+=($!)
    wait_for 10.77.0.1
}

start_wireguard_go() {
    local side ns addr port peer_pub
    umask 077
    for side in a b; do wg genkey >"$work/wg-$side.key"; wg pubkey <"$work/wg-$side.key" >"$work/wg-$side.pub"; done
    for side in a b; do
        if [ "$side" = a ]; then ns=$ns_a addr=10.78.0.1 peer_pub=$(cat "$work/wg-b.pub"); else ns=$ns_b addr=10.78.0.2 peer_pub=$(cat "$work/wg-a.pub"); fi
        # wireguard-go refuses to run on Linux without this (it prefers the kernel module,
        # which this kernel lacks); -f keeps it in the foreground so it can be stopped by pid.
        WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 ip netns exec "$ns" wireguard-go -f "ytput-$side-wg" \
            >"$work/wg-$side.log" 2>&1 &
        pids+=($!)
        for _ in $(seq 40); do ip -n "$ns" link show "ytput-$side-wg" >/dev/null 2>&1 && break; sleep 0.25; done
        port=51820
        if [ "$side" = a ]; then
            ip netns exec "$ns" wg set "ytput-$side-wg" private-key "$work/wg-$side.key" listen-port "$port" \
                peer "$peer_pub" allowed-ips 10.78.0.2/32
        else
            ip netns exec "$ns" wg set "ytput-$side-wg" private-key "$work/wg-$side.key" listen-port "$port" \
                peer "$peer_pub" allowed-ips 10.78.0.1/32 endpoint 198.18.70.1:51820
        fi
        ip -n "$ns" address add "$addr/30" dev "ytput-$side-wg"
        ip -n "$ns" link set "ytput-$side-wg" up
    done
    wait_for 10.78.0.1
}

start_openvpn_bf() {
    openvpn --genkey secret "$work/ovpn.key" >/dev/null 2>&1
    local common=(--dev-type tun --proto udp --cipher BF-CBC --data-ciphers BF-CBC --auth MD5
        --providers legacy default --verb 1)
    ip netns exec "$ns_a" openvpn "${common[@]}" --dev ytput-a-ov --local 198.18.70.1 --lport 1194 \
        --ifconfig 10.79.0.1 10.79.0.2 --secret "$work/ovpn.key" 0 >"$work/ovpn-a.log" 2>&1 &
    pids+=($!)
    ip netns exec "$ns_b" openvpn "${common[@]}" --dev ytput-b-ov --remote 198.18.70.1 1194 --nobind \
        --ifconfig 10.79.0.2 10.79.0.1 --secret "$work/ovpn.key" 1 >"$work/ovpn-b.log" 2>&1 &
    pids+=($!)
    wait_for 10.79.0.1
}

# One iperf3 run from B to A's address $1 ($2: "" for B to A, "-R" for A to B); prints Mbit/s
# as the receiver counted it.
measure() {
    ip netns exec "$ns_a" iperf3 -s -1 -B "$1" >/dev/null 2>&1 &
    local server=$!
    for _ in $(seq 40); do
        ip netns exec "$ns_a" ss -ltn 2>/dev/null | grep -q "$1:5201" && break
        sleep 0.1
    done
    local reverse=()
    [ -n "$2" ] && reverse=("$2")
    ip netns exec "$ns_b" iperf3 -c "$1" -t "$seconds" -f m "${reverse[@]}" |
        awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Mbits/sec") print $(i - 1) }'
    wait "$server" || true
}

# Resident memory, in KiB, of process $1 and its children (yavipind's workers).
rss_kib() {
    local pid=$1 total children child
    total=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    read -r -a children <"/proc/$pid/task/$pid/children" || true
    for child in "${children[@]}"; do
        total=$((total + $(awk '/^VmRSS:/ { print $2 }' "/proc/$child/status")))
    done
    echo "$total"
}

median() {
    sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

results="$work/results"
: >"$results"
for tunnel in plain yavipin wireguard-go openvpn-bf; do
    case "$tunnel" in
    plain) target=198.18.70.1 ;;
    yavipin) start_yavipin; target=10.77.0.1 ;;
    wireguard-go) start_wireguard_go; target=10.78.0.1 ;;
    openvpn-bf) start_openvpn_bf; target=10.79.0.1 ;;
    esac
    for round in $(seq "$rounds"); do
        for direction in b-to-a a-to-b; do
            flag=""
            [ "$direction" = a-to-b ] && flag="-R"
            mbits=$(measure "$target" "$flag")
            echo "$tunnel $direction round $round: $mbits Mbit/s"
            echo "$tunnel $direction $mbits" >>"$results"
        done
    done
    # Both sides' processes, after the load: what the tunnel costs in memory.
    if [ "${#pids[@]}" -gt 0 ]; then
        memory=0
        for pid in "${pids[@]}"; do memory=$((memory + $(rss_kib "$pid"))); done
        echo "$tunnel memory $memory" >>"$results"
        echo "$tunnel: resident memory of both sides after the runs: $memory KiB"
    fi
    stop_tunnel
done

echo "== median of $rounds runs of $seconds s, one TCP stream (Mbit/s)"
for tunnel in plain yavipin wireguard-go openvpn-bf; do
    line="$tunnel"
    for direction in b-to-a a-to-b; do
        line="$line $direction $(awk -v t="$tunnel" -v d="$direction" '$1 == t && $2 == d { print $3 }' "$results" | median)"
    done
    memory=$(awk -v t="$tunnel" '$1 == t && $2 == "memory" { print $3 }' "$results")
    [ -n "$memory" ] && line="$line memory-kib $memory"
    echo "$line"
done
