# Sourced by scripts/setup.sh and scripts/setup-pypy.sh: the Debian packages and the
# virtualenv steps they share.  Run from the checkout's root.

# install_debian_packages WHO PACKAGE...: apt-get install the packages when root; else
# say which are missing (as WHO) and return 1.  Nothing to do for no packages.
install_debian_packages() {
    local who=$1
    shift
    [ $# -gt 0 ] || return 0
    if [ "$(id -u)" = 0 ]; then
        # (exit, not return: a caller's "|| true" must not hide a failed install)
        apt-get update -qq || exit 1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || exit 1
    else
        echo "$who: missing Debian packages: $* (run as root, or apt-get install them)" >&2
        return 1
    fi
}

# venv_with_xlfs PYTHON DIR: the virtualenv DIR, made by PYTHON if missing, with xlfs and
# its test dependencies installed editable (again when pyproject.toml is newer).
venv_with_xlfs() {
    local python=$1 dir=$2
    [ -x "$dir/bin/python" ] || "$python" -m venv "$dir"
    local stamp="$dir/.xlfs-installed"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$dir/bin/pip" install -q --upgrade pip >/dev/null
        "$dir/bin/pip" install -q -e '.[test]'
        touch "$stamp"
    fi
}
