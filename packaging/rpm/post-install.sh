# icmp-guard (rpm %post; $1 is 1 on install, 2 on upgrade): enable the unit; start or
# restart it only when /etc/default/icmp-guard names the interfaces to protect. A restart
# leaves no gap: the unit runs `run --keep`, whose next start adopts the pinned links.
INTERFACES=
if [ -r /etc/default/icmp-guard ]; then
    . /etc/default/icmp-guard
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -eq 1 ]; then
        systemctl enable icmp-guard.service >/dev/null 2>&1 || :
    fi
    if [ -n "$INTERFACES" ]; then
        systemctl restart icmp-guard.service >/dev/null 2>&1 || :
    else
        echo "icmp-guard: enabled; set INTERFACES in /etc/default/icmp-guard, then: systemctl start icmp-guard"
    fi
fi
exit 0
