#!/usr/bin/env bash
# Regenerates the pcap files of this directory with real tools (ping, tracepath, hping3,
# ndisc6, rdisc6), as root: two network namespaces joined by a veth pair, documentation
# addresses, fixed MAC addresses; tcpdump records, in the guarded namespace, only what
# arrives on its veth (-Q in): exactly what the XDP program attached there would see.
# Everything is removed on exit, pass or fail.
#
#   guarded  igcorpus-PID-g  veth-g  02:00:00:00:00:01  192.0.2.1/24  2001:db8::1/64
#   peer     igcorpus-PID-p  veth-p  02:00:00:00:00:02  192.0.2.2/24  2001:db8::2/64
#
# Usage: capture.sh [NAME]   (one file, or all of them)
#
# Frame order and count vary between runs (timers, neighbour discovery): after
# regenerating a file, rewrite its .expect table from `tcpdump -r NAME.pcap -n -e -vv`.
set -euo pipefail
cd "$(dirname "$0")"
only=${1:-}

guarded=igcorpus-$$-g
peer=igcorpus-$$-p
dump_pid=
work=$(mktemp -d)

teardown() {
    if [ -n "$dump_pid" ]; then
        kill "$dump_pid" 2>/dev/null || true
        wait "$dump_pid" 2>/dev/null || true
        dump_pid=
    fi
    ip netns del "$guarded" 2>/dev/null || true
    ip netns del "$peer" 2>/dev/null || true
}

finish() {
    teardown
    rm -rf "$work"
}
trap finish EXIT

in_guarded() { ip netns exec "$guarded" "$@"; }
in_peer() { ip netns exec "$peer" "$@"; }

# A fresh pair for each file: every file starts with the peer's link coming up.
lab() {
    teardown
    ip netns add "$guarded"
    ip netns add "$peer"
    ip link add veth-g netns "$guarded" address 02:00:00:00:00:01 type veth \
        peer name veth-p netns "$peer" address 02:00:00:00:00:02
    for ns in "$guarded" "$peer"; do
        ip -n "$ns" link set lo up
        ip netns exec "$ns" sysctl -qw net.ipv4.icmp_echo_ignore_broadcasts=0
    done
    ip -n "$guarded" addr add 192.0.2.1/24 dev veth-g
    ip -n "$peer" addr add 192.0.2.2/24 dev veth-p
    ip -n "$guarded" addr add 2001:db8::1/64 dev veth-g
    ip -n "$peer" addr add 2001:db8::2/64 dev veth-p
}

# The guarded end comes up first, so that tcpdump can open it and see the peer's link come
# up (duplicate address detection, MLD reports, router solicitations).
record() {
    lab
    ip -n "$guarded" link set veth-g up
    in_guarded tcpdump -i veth-g -Q in -U -s 0 -Z root -w "$work/$1.pcap" 2>/dev/null &
    dump_pid=$!
    sleep 1
    ip -n "$peer" link set veth-p up
    # Wait for duplicate address detection, so that pings find their addresses.
    for _ in $(seq 50); do
        if ! ip -n "$guarded" -6 addr show tentative | grep -q inet6 \
            && ! ip -n "$peer" -6 addr show tentative | grep -q inet6; then
            break
        fi
        sleep 0.1
    done
}

stop() {
    sleep 1
    kill "$dump_pid"
    wait "$dump_pid" 2>/dev/null || true
    dump_pid=
    mv "$work/$1.pcap" "$1.pcap"
    echo "$1.pcap: $(tcpdump -r "$1.pcap" 2>/dev/null | wc -l) frames"
}

want() { [ -z "$only" ] || [ "$only" = "$1" ]; }

if want ping; then
    record ping
    in_peer ping -c 3 -i 0.2 192.0.2.1 >/dev/null 2>&1 || true
    in_guarded ping -c 2 -i 0.2 192.0.2.2 >/dev/null 2>&1 || true
    stop ping
fi

if want ping6; then
    record ping6
    in_peer ping -6 -c 3 -i 0.2 2001:db8::1 >/dev/null 2>&1 || true
    in_guarded ping -6 -c 2 -i 0.2 2001:db8::2 >/dev/null 2>&1 || true
    in_peer ping -6 -c 1 -I veth-p ff02::1 >/dev/null 2>&1 || true
    in_peer ping -6 -c 1 -I veth-p ff05::1 >/dev/null 2>&1 || true
    stop ping6
fi

if want broadcast; then
    record broadcast
    in_peer ping -b -c 2 -i 0.2 192.0.2.255 >/dev/null 2>&1 || true
    in_peer ping -b -c 1 255.255.255.255 >/dev/null 2>&1 || true
    in_peer ping -c 1 -I veth-p 224.0.0.1 >/dev/null 2>&1 || true
    in_peer ping -c 1 192.0.2.1 >/dev/null 2>&1 || true
    stop broadcast
fi

if want fragments; then
    # 3,000-byte echoes over a 1,500-byte MTU: a first fragment (classified) and non-first
    # fragments (passed unread), in both families and both directions.
    record fragments
    in_peer ping -c 1 -s 3000 192.0.2.1 >/dev/null 2>&1 || true
    in_guarded ping -c 1 -s 3000 192.0.2.2 >/dev/null 2>&1 || true
    in_peer ping -6 -c 1 -s 3000 2001:db8::1 >/dev/null 2>&1 || true
    in_guarded ping -6 -c 1 -s 3000 2001:db8::2 >/dev/null 2>&1 || true
    stop fragments
fi

if want options; then
    # IP options move the ICMP header: record route fills IHL 15.
    record options
    in_peer ping -c 1 -R 192.0.2.1 >/dev/null 2>&1 || true
    in_peer ping -c 1 -T tsonly 192.0.2.1 >/dev/null 2>&1 || true
    in_peer ping -c 1 -T tsandaddr 192.0.2.1 >/dev/null 2>&1 || true
    stop options
fi

if want tracepath; then
    # tracepath between the two ends (UDP probes, port unreachable back), then into a
    # routing loop: each side sends 198.51.100.0/24 and 2001:db8:1::/64 to the other, so
    # the peer answers time exceeded and, forwarding out the interface the probe came in
    # on, a redirect.
    record tracepath
    for ns in "$guarded" "$peer"; do
        ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    done
    ip -n "$guarded" route add 198.51.100.0/24 via 192.0.2.2
    ip -n "$peer" route add 198.51.100.0/24 via 192.0.2.1
    ip -n "$guarded" -6 route add 2001:db8:1::/64 via 2001:db8::2
    ip -n "$peer" -6 route add 2001:db8:1::/64 via 2001:db8::1
    in_guarded tracepath -n -m 2 -l 100 192.0.2.2 >/dev/null || true
    in_peer tracepath -n -m 2 -l 100 192.0.2.1 >/dev/null || true
    in_guarded tracepath -n -m 2 -l 100 198.51.100.99 >/dev/null || true
    in_guarded tracepath -6 -n -m 2 -l 100 2001:db8::2 >/dev/null || true
    in_guarded tracepath -6 -n -m 2 -l 100 2001:db8:1::99 >/dev/null || true
    stop tracepath
fi

if want hping3; then
    record hping3
    hping() { in_peer hping3 -q -c 1 "$@" 192.0.2.1 >/dev/null 2>&1 || true; }
    hping --icmp-ts
    hping --icmp-addr
    hping --icmp -C 5 -K 1
    hping --icmp -C 4
    hping --icmp -C 3 -K 4
    hping --icmp -C 11 -K 0
    hping --icmp -C 8 -a 127.0.0.1
    hping --icmp -C 8 -a 224.0.0.9
    hping --icmp -C 8 -a 192.0.2.255
    hping --icmp -C 8 -a 198.51.100.7
    hping --icmp -C 8 -d 40 -f
    hping --icmp -C 8 -d 100 -g 65520
    hping --icmp -C 8 -d 100 -g 8
    hping -S -p 80
    hping --udp -p 53
    hping --rawip -H 47 -d 20
    stop hping3
fi

if want ndisc6; then
    record ndisc6
    in_peer ndisc6 -1 -r 1 2001:db8::1 veth-p >/dev/null || true
    in_peer ndisc6 -1 -r 1 fe80::ff:fe00:1 veth-p >/dev/null || true
    in_peer rdisc6 -1 -r 1 veth-p >/dev/null || true
    stop ndisc6
fi
