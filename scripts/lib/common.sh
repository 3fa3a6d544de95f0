# Shared by scripts/setup, scripts/test and scripts/demo: repository root and the venv's interpreter.
IAT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IAT_PY="$IAT_ROOT/.venv/bin/python"

# Installs the named Debian packages that are missing (apt-get needs root; otherwise say what is missing and stop).
apt_ensure() {
  local missing=() p
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing system packages: ${missing[*]}; install them (sudo apt-get install ${missing[*]}) and rerun" >&2
    return 1
  fi
  echo "installing system packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
