#!/usr/bin/env bash
# link_loss.sh DROP - delivery latency over the node link under loss: two
# nodes with cluster_route udp (relay), node 6 behind ringchat-udp-proxy
# dropping DROP % of the datagrams toward it, every pair split across the
# nodes, open loop at 5,000 msgs/s for 10 s. Prints the bench's delivery
# line and whole-run counts and node 5's retransmits and SRTT. Uses the
# private services (scripts/services.sh start first) and build-ci.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
eval "$(bash scripts/services.sh env)"
DROP=$1
B=build-ci/src
COMMON="--cluster-route udp --cluster-secret bench-cluster-secret-of-at-least-32-bytes --durability relay --hash-cost 1 --workers 2 --mysql-socket $RINGCHAT_MYSQL_SOCKET --redis-socket $RINGCHAT_REDIS_SOCKET --max-unauth-per-addr 0 --max-conns-per-addr 0 --signup-addr-limit 0 --login-timeout-ms 600000 --rate-msgs-per-s 1000000 --rate-burst 1000000"
$B/ringchat-udp-proxy --listen 127.0.0.1:47002 --forward 127.0.0.1:47001 --drop $DROP --seed 3 >/dev/null 2>&1 &
PX=$!
$B/ringchatd $COMMON --node-id 5 --listen 127.0.0.1:47101 --admin-listen 127.0.0.1:47201 > /tmp/loss-a.log 2>&1 &
A=$!
$B/ringchatd $COMMON --node-id 6 --listen 127.0.0.1:47102 --admin-listen 127.0.0.1:47202 --link-listen 127.0.0.1:47001 --link-advertise 127.0.0.1:47002 > /tmp/loss-b.log 2>&1 &
BB=$!
sleep 3
$B/ringchat-bench chat --nodes 127.0.0.1:47101,127.0.0.1:47102 --users 200 --window 16 --rate 5000 --duration 10 --prefix loss$DROP$RANDOM 2>&1 | grep -E "sent OK|send->delivery|whole run"
curl -s 127.0.0.1:47201/metrics | grep -E "^ringchat_link_retransmits_total|^ringchat_link_srtt"
kill $A $BB; wait $A $BB 2>/dev/null; kill $PX
