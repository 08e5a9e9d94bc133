# Guest side of the feature test: what Linux made of the config space, then GET_ID (serial), FLUSH
# (fsync with a write-back cache) and DISCARD (blkdiscard; the RAM disk reads zeros afterwards).
echo "max_segments=$(cat /sys/block/vda/queue/max_segments)"
echo "discard_max=$(cat /sys/block/vda/queue/discard_max_bytes)"
echo "write_zeroes_max=$(cat /sys/block/vda/queue/write_zeroes_max_bytes)"
echo "cache=$(cat /sys/block/vda/queue/write_cache)"
echo "serial=$(cat /sys/block/vda/serial 2>/dev/null)"
dd if=/dev/urandom of=/dev/vda bs=64k count=4 conv=fsync 2>/dev/null && echo "fsync-ok"
if blkdiscard -o 0 -l 262144 /dev/vda 2>/dev/null; then
  n=$(dd if=/dev/vda bs=64k count=4 iflag=direct 2>/dev/null | tr -d '\000' | wc -c)
  echo "discard-ok nonzero-after=$n"
fi
true
