# shellcheck shell=bash
# rules_held KEY: how many audit rules the kernel holds with key KEY (auditctl -l shows it as -F key=).
rules_held() { auditctl -l -k "$1" | grep -c -- "-F key=$1\$" || true; }
