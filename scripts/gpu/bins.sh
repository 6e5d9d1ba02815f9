# bins.sh, sourced by the GPU scripts: `unpack_bins DIR NAME...` makes RT a
# fresh temporary directory holding the executables NAME... taken from DIR,
# which holds them as built (`make gpu-devbin`), gzip'd one by one (`make
# gpu-jobbin` and the like) or together in bins.tar.xz (`make gpu-roundbin`:
# the binaries share most of their code, so one xz stream over all of them
# travels at about a third of their gzip'd size). With no NAME, every
# executable DIR holds. Returns non-zero, saying which is missing, when one
# is not there.
unpack_bins() {
  local dir=$1 f n
  shift
  RT=$(mktemp -d)
  if [ -f "$dir/bins.tar.xz" ]; then
    tar -xJf "$dir/bins.tar.xz" -C "$RT" "$@" || { echo "unpack_bins: $dir/bins.tar.xz lacks one of: $*"; return 2; }
  elif [ $# -eq 0 ]; then
    for f in "$dir"/*; do
      case $f in
      *.gz) gunzip -c "$f" >"$RT/$(basename "$f" .gz)" ;;
      *) [ -f "$f" ] && [ -x "$f" ] && cp "$f" "$RT/" ;;
      esac
    done
  else
    for n in "$@"; do
      if [ -f "$dir/$n.gz" ]; then
        gunzip -c "$dir/$n.gz" >"$RT/$n"
      elif [ -f "$dir/$n" ]; then
        cp "$dir/$n" "$RT/$n"
      else
        echo "unpack_bins: missing $dir/$n(.gz)"
        return 2
      fi
    done
  fi
  chmod +x "$RT"/* 2>/dev/null
  [ -n "$(ls -A "$RT")" ] || { echo "unpack_bins: no binaries in $dir"; return 2; }
}
