# Shared locations for the host scripts (sourced, not run).
ORCA_USER=${ORCA_USER:-orcatest}
ORCA_USER2=${ORCA_USER2:-orcatest2}
ORCA_HOME=${ORCA_HOME:-/opt/orca}
ORCA_SRC=$ORCA_HOME/src
ORCA_VENV=$ORCA_HOME/venv
ORCA_FIXTURES=${ORCA_FIXTURES:-/var/cache/orca-fixtures}
export ORCA_USER ORCA_USER2 ORCA_HOME ORCA_SRC ORCA_VENV ORCA_FIXTURES

# The Debian mirror this host's apt uses (never written into the repository).
host_mirror() {
    local uri
    uri=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
          | grep -v security | head -n1 | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' | awk '{print $1}')
    echo "${uri%/}"
}
