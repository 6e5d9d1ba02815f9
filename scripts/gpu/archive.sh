# archive.sh, sourced by the GPU scripts: the archive's defaults (ARCHIVE,
# PARTS, ARCHIVE_SHA256, ARCHIVE_MD5: the copy in ../shared/data, whose MD5
# the job checks as it would a download's), and `cifar_archive`, which makes sure the
# CIFAR-10 archive ARCHIVE is here and whole. When ARCHIVE is missing and
# PARTS holds the parts of `make gpu-tta-parts` / `make gpu-roundbin`
# (part-00, part-01, ...), it joins them, into a temporary file first, and
# keeps the result only when its SHA-256 is ARCHIVE_SHA256: a partial set of
# parts (an earlier call of a device session) leaves nothing behind.
# Returns 0 with ARCHIVE verified, 1 (saying why) otherwise.
ARCHIVE=${ARCHIVE:-data/cifar-10-binary.tar.gz}
PARTS=${PARTS:-.devbin/cifar-parts}
ARCHIVE_SHA256=${ARCHIVE_SHA256:-ec30ca52e4dacef681246eccf170664c7ddf6c340060ab4372cb6c7443c4f0c0}
ARCHIVE_MD5=${ARCHIVE_MD5:-86c0b761e5f5abb74bf6d87eddaf0ab6}
cifar_archive() {
  local got tmp
  if [ ! -f "$ARCHIVE" ] && compgen -G "$PARTS/part-*" >/dev/null; then
    mkdir -p "$(dirname "$ARCHIVE")" || return 1
    tmp="$ARCHIVE.joining"
    cat "$PARTS"/part-* >"$tmp" || { rm -f "$tmp"; return 1; }
    got=$(sha256sum "$tmp" | cut -d' ' -f1)
    if [ "$got" != "$ARCHIVE_SHA256" ]; then
      echo "parts in $PARTS ($(ls "$PARTS" | tr '\n' ' ')) join to SHA-256 $got, not the archive's: some missing?"
      rm -f "$tmp"
      return 1
    fi
    mv "$tmp" "$ARCHIVE"
  fi
  [ -f "$ARCHIVE" ] || { echo "no CIFAR-10 archive at $ARCHIVE (nor parts in $PARTS)"; return 1; }
  got=$(sha256sum "$ARCHIVE" | cut -d' ' -f1)
  [ "$got" = "$ARCHIVE_SHA256" ] || { echo "$ARCHIVE has SHA-256 $got, want $ARCHIVE_SHA256"; return 1; }
  echo "archive $ARCHIVE verified (SHA-256 $got)"
}
