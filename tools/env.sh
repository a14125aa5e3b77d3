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

# Copy the source tree to $2 as the test user runs it: no VCS or build
# leftovers, the C pre-filter of runrootless built for the venv's python,
# readable by everyone.  Extra arguments go to rsync (--delete for a sync;
# built .so files and build/ are excluded, so a sync keeps them).
copy_tree() {
    local from=$1 to=$2
    shift 2
    rsync -a "$@" --exclude .git --exclude '__pycache__' --exclude '*.egg-info' --exclude '*.so' \
        --exclude /build "$from/" "$to/"
    local out
    if ! out=$(cd "$to" && "$ORCA_VENV/bin/python" setup.py -q build_ext --inplace 2>&1); then
        echo "$out" >&2
        return 1
    fi
    chmod -R a+rX "$to"
}
