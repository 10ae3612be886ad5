#!/usr/bin/env bash
# Measures, in the VM (bash vm/run.sh bash vm/kernel-wg-facts.sh), what kernel WireGuard's
# interface counters and a capture on it show, for docs/datapath.md. Two namespaces joined by a
# veth underlay; everything is removed at the end.
set -euo pipefail
A=wgm-a B=wgm-b
cleanup() { ip netns del $A 2>/dev/null || true; ip netns del $B 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"; }
tmp=$(mktemp -d)
trap cleanup EXIT
ip netns add $A; ip netns add $B
ip link add va netns $A type veth peer name vb netns $B
ip -n $A addr add 172.31.250.1/30 dev va; ip -n $B addr add 172.31.250.2/30 dev vb
for n in $A $B; do ip -n $n link set lo up; done
ip -n $A link set va up; ip -n $B link set vb up
wg genkey >"$tmp/ka"; wg genkey >"$tmp/kb"
ip -n $A link add wga type wireguard; ip -n $B link add wgb type wireguard
ip netns exec $A wg set wga listen-port 51820 private-key "$tmp/ka" peer "$(wg pubkey <"$tmp/kb")" allowed-ips 10.250.0.2/32 endpoint 172.31.250.2:51821
ip netns exec $B wg set wgb listen-port 51821 private-key "$tmp/kb" peer "$(wg pubkey <"$tmp/ka")" allowed-ips 10.250.0.1/32 endpoint 172.31.250.1:51820
ip -n $A addr add 10.250.0.1/24 dev wga; ip -n $B addr add 10.250.0.2/24 dev wgb
ip -n $A link set wga up; ip -n $B link set wgb up
ctr() { local s=/sys/class/net/$2/statistics; ip netns exec $1 sh -c "echo tx \$(cat $s/tx_packets) pkts \$(cat $s/tx_bytes) B, rx \$(cat $s/rx_packets) pkts \$(cat $s/rx_bytes) B"; }
under() { tcpdump -nn -r "$1" 2>/dev/null | grep -oE 'UDP, length [0-9]+' | awk '{print $3}' | sort -n | uniq -c | awk '{printf "%s x %s B; ", $1, $2}'; echo; }

ip netns exec $A tcpdump -i va -U -n -w "$tmp/hs.pcap" udp 2>/dev/null & sleep 2
ip netns exec $A ping -c 1 -W 3 10.250.0.2 >/dev/null
sleep 1; kill %1; wait %1 2>/dev/null || true
echo "first ping (handshake + one 84-byte echo each way): A counters: $(ctr $A wga)"
echo "  underlay UDP payloads: $(under "$tmp/hs.pcap")"

ip netns exec $A tcpdump -i va -U -n -w "$tmp/p.pcap" udp 2>/dev/null & sleep 2
before=$(ctr $A wga)
ip netns exec $A ping -c 5 -i 0.2 -s 1000 10.250.0.2 >/dev/null
sleep 1; kill %1; wait %1 2>/dev/null || true
echo "5 pings of 1028-byte IP packets: A counters before: $before, after: $(ctr $A wga)"
echo "  underlay UDP payloads: $(under "$tmp/p.pcap")"

ip netns exec $B iperf3 -s -1 -D --logfile "$tmp/iperf.log"; sleep 2
ip netns exec $A tcpdump -i va -U -n -s 96 -w "$tmp/u.pcap" udp 2>/dev/null &
ip netns exec $B tcpdump -i wgb -U -n -s 96 -w "$tmp/rx.pcap" tcp 2>/dev/null &
ip netns exec $A tcpdump -i wga -U -n -s 96 -w "$tmp/tx.pcap" tcp 2>/dev/null &
sleep 3
ip netns exec $A iperf3 -c 10.250.0.2 -t 3 -J >"$tmp/c.json"
sleep 1; kill %1 %2 %3; wait 2>/dev/null || true
msgs=$(tcpdump -nn -r "$tmp/u.pcap" 2>/dev/null | grep -c '172.31.250.1.51820 > ')
rx=$(tcpdump -nn -r "$tmp/rx.pcap" 2>/dev/null | grep -c '10.250.0.1.* > 10.250.0.2')
tx=$(tcpdump -nn -r "$tmp/tx.pcap" 2>/dev/null | grep -c '10.250.0.1.* > 10.250.0.2')
maxrx=$(tcpdump -nn -v -r "$tmp/rx.pcap" 2>/dev/null | grep -oE 'length [0-9]+\)' | grep -oE '[0-9]+' | sort -n | tail -n 1)
maxtx=$(tcpdump -nn -v -r "$tmp/tx.pcap" 2>/dev/null | grep -oE 'length [0-9]+\)' | grep -oE '[0-9]+' | sort -n | tail -n 1)
echo "iperf3 TCP A->B, 3 s: $msgs WireGuard messages A->B on the underlay; A's tap on wga saw $tx packets A->B (largest $maxtx B); B's tap on wgb saw $rx (largest $maxrx B)"
echo "  throughput $(node -e 'const j=require(process.argv[1]);console.log((j.end.sum_received.bits_per_second/1e6).toFixed(0)+" Mbit/s")' "$tmp/c.json")"
echo "features of wga: $(ip netns exec $A ethtool -k wga | grep -E '^(tcp-segmentation-offload|generic-segmentation-offload|generic-receive-offload):' | tr '\n' ' ')"
