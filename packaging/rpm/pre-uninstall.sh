# icmp-guard (rpm %preun; $1 is 0 on removal, 1 on upgrade): on removal, stop and disable
# the unit and take the guard off every interface, since nothing will be left to do it.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl disable --now icmp-guard.service >/dev/null 2>&1 || :
    fi
    if [ -d /sys/fs/bpf/icmp-guard ]; then
        /usr/sbin/icmp-guard detach --all || :
    fi
fi
exit 0
