#!/usr/bin/env bash
# Prepares a ringgate node as an LVS direct-routing (DR) real server: the VIP lives on lo so
# the node accepts packets addressed to it, and ARP is tuned so only the director answers for
# the VIP. Usage: ./lvs-dr-realserver.sh start|stop VIP
set -euo pipefail
action=${1:?usage: lvs-dr-realserver.sh start|stop VIP}
vip=${2:?usage: lvs-dr-realserver.sh start|stop VIP}

arp() {
  # 1: answer ARP only for addresses on the receiving interface (never for the VIP on lo).
  sysctl -q -w net.ipv4.conf.all.arp_ignore="$1" net.ipv4.conf.lo.arp_ignore="$1"
  # 2: always use the best local address as ARP source (never the VIP).
  sysctl -q -w net.ipv4.conf.all.arp_announce="$2" net.ipv4.conf.lo.arp_announce="$2"
}

case $action in
  start)
    ip addr replace "$vip/32" dev lo label lo:vip
    arp 1 2
    echo "VIP $vip on lo; arp_ignore=1 arp_announce=2"
    ;;
  stop)
    ip addr del "$vip/32" dev lo 2>/dev/null || true
    arp 0 0
    echo "VIP $vip removed; ARP defaults restored"
    ;;
  *)
    echo "usage: lvs-dr-realserver.sh start|stop VIP" >&2
    exit 2
    ;;
esac
