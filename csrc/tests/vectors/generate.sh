#!/bin/sh
# Regenerates the hash/checksums test vectors in this directory from a part
# written by real ClickHouse (embedded chDB, driven by chq) and the `.backup`
# manifest of a BACKUP of it. Deterministic data: numbers(20000).
#
#   CHQ=/path/to/chq CHDB_LIB=/path/to/libchdb.so csrc/tests/vectors/generate.sh
#
# expected.tsv holds name, size and the <checksum> ClickHouse wrote into
# `.backup` (a file of size 0 has no <checksum> there: its checksum is 0).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
CHQ=${CHQ:-/tmp/chq}
CHDB_LIB=${CHDB_LIB:-$HOME/.cache/chdb/package/libchdb.so}
export CHDB_LIB

work=$(mktemp -d /tmp/chb-vectors.XXXXXX)
trap 'rm -rf "$work"' EXIT

cat > "$work/config.xml" <<XML
<clickhouse>
  <storage_configuration><disks><backups><type>local</type><path>$work/bk/</path></backups></disks></storage_configuration>
  <backups><allowed_disk>backups</allowed_disk><allowed_path>$work/bk/</allowed_path></backups>
</clickhouse>
XML

# k: Delta+LZ4, tiny; v: 6000 pseudo-random bytes repeated, so v.bin is a
# few KiB (several 2048-byte hash blocks plus a tail); a: always-empty
# arrays, so a.bin is an empty file; p: a projection (a `p.proj` entry).
"$CHQ" --path "$work/data" --config "$work/config.xml" \
  "CREATE DATABASE v" \
  "CREATE TABLE v.t (k UInt64 CODEC(Delta, LZ4), v UInt8, s String, a Array(UInt8),
     PROJECTION p (SELECT s, count() GROUP BY s))
   ENGINE = MergeTree ORDER BY k SETTINGS min_bytes_for_wide_part = 0" \
  "INSERT INTO v.t SELECT number, intHash32(number % 6000) % 256, toString(number % 97), []
   FROM numbers(20000)" \
  "BACKUP TABLE v.t TO Disk('backups', 'b')" >/dev/null

part=data/v/t/all_1_1_0
src="$work/bk/b/$part"
# Kept: <16 bytes, 16..128, >128 with a short tail, >=5000 (multi-block),
# empty, and the part's (and projection's) checksums.txt.
files="count.txt columns.txt primary.cidx serialization.json v.bin a.bin checksums.txt p.proj/checksums.txt"

rm -rf "$here/p.proj"
mkdir -p "$here/p.proj"
: > "$here/expected.tsv.new"
for f in $files; do
  line=$(sed 's/<file>/\n<file>/g' "$work/bk/b/.backup" |
    sed -n "s|^<file><name>$part/$f</name><size>\([0-9]*\)</size>\(<checksum>\([0-9a-f]*\)</checksum>\)\{0,1\}.*|\1 \3|p")
  [ -n "$line" ] || { echo "generate.sh: $f not in .backup" >&2; exit 1; }
  size=${line% *}
  sum=${line#* }
  if [ "$size" = 0 ]; then
    : > "$here/$f"            # BACKUP stores no bytes for an empty file
    sum=00000000000000000000000000000000
  else
    cp "$src/$f" "$here/$f"
  fi
  [ "$(wc -c < "$here/$f")" -eq "$size" ] || { echo "generate.sh: size of $f" >&2; exit 1; }
  printf '%s\t%s\t%s\n' "$f" "$size" "$sum" >> "$here/expected.tsv.new"
done
mv "$here/expected.tsv.new" "$here/expected.tsv"
echo "vectors written to $here"
