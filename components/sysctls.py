"""The kernel settings of the hosts (/etc/sysctl.d/90-clawstaff.conf): the hardening every host gets, a
cage host's and the audit sink's, and what a cage host adds for Docker. Pure data and one renderer;
components.hostconfig re-exports them.
"""

from __future__ import annotations

Sysctls = tuple[tuple[str, str, str], ...]  # (key, value, why)

# A cage host routes its cages' egress, and bridged traffic meets its firewall.
_CAGE_ROUTING: Sysctls = (
    ("net.ipv4.ip_forward", "1", "Docker routes cage egress through the host"),
    ("net.bridge.bridge-nf-call-iptables", "1", "bridged cage traffic passes the host firewall"),
    ("net.bridge.bridge-nf-call-ip6tables", "1", "bridged IPv6 too, so the IPv6 drops apply"),
)
# Every host's kernel hardening: a cage host's and the audit sink's (components/sinkconfig.py).
HARDENING_SYSCTLS: Sysctls = (
    ("net.ipv4.conf.all.rp_filter", "1", "drop spoofed source addresses"),
    ("net.ipv4.conf.default.rp_filter", "1", "drop spoofed source addresses"),
    ("net.ipv4.conf.all.accept_redirects", "0", "no ICMP redirects"),
    ("net.ipv4.conf.default.accept_redirects", "0", "no ICMP redirects"),
    ("net.ipv4.conf.all.send_redirects", "0", "no ICMP redirects"),
    ("net.ipv4.conf.all.accept_source_route", "0", "no source routing"),
    ("net.ipv6.conf.all.accept_redirects", "0", "no ICMPv6 redirects"),
    ("net.ipv6.conf.default.accept_redirects", "0", "no ICMPv6 redirects"),
    ("net.ipv4.conf.all.log_martians", "1", "log impossible source addresses"),
    ("net.ipv4.tcp_syncookies", "1", "SYN flood protection"),
    ("net.ipv4.icmp_echo_ignore_broadcasts", "1", "no smurf amplification"),
    ("kernel.kptr_restrict", "2", "hide kernel pointers from every user"),
    ("kernel.dmesg_restrict", "1", "kernel log for root only"),
    ("kernel.unprivileged_bpf_disabled", "1", "no BPF for unprivileged users"),
    ("net.core.bpf_jit_harden", "2", "harden the BPF JIT"),
    ("kernel.unprivileged_userns_clone", "0", "no user namespaces for unprivileged users (Debian)"),
    ("kernel.yama.ptrace_scope", "2", "ptrace for CAP_SYS_PTRACE only"),
    ("kernel.kexec_load_disabled", "1", "no replacing the running kernel"),
    ("kernel.sysrq", "0", "no magic SysRq"),
    ("fs.protected_hardlinks", "1", "link-following protections"),
    ("fs.protected_symlinks", "1", "link-following protections"),
    ("fs.protected_fifos", "2", "link-following protections"),
    ("fs.protected_regular", "2", "link-following protections"),
    ("fs.suid_dumpable", "0", "no core dumps of setuid processes"),
)
# A cage host's sysctls.
SYSCTLS: Sysctls = (
    *_CAGE_ROUTING,
    *HARDENING_SYSCTLS,
    ("vm.swappiness", "0", "swap is off; never page out cage memory (decrypted credentials)"),
)


def render_sysctls(sysctls: Sysctls = SYSCTLS) -> str:
    """/etc/sysctl.d drop-in (a cage host's by default; its bridge keys need the br_netfilter module,
    which the bootstrap loads)."""
    lines = ["# clawstaff host hardening, rendered by components/hostconfig.py"]
    for key, value, why in sysctls:
        lines.append(f"# {why}")
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"
