# Guest side of the back-end kill test: two passes, each writing its own 8 MiB random pattern in
# 1 MiB O_DIRECT pieces (one dd each, so the writes are spread over seconds and each is split into a
# few requests in flight together) and reading it all back.
# The host kills and restarts the back-end meanwhile; every pass must read back exactly what it wrote.
set -e
echo "sectors=$(cat /sys/block/vda/size) queues=$(ls /sys/block/vda/mq | wc -l)"
# the negotiated virtio feature bits, bit 0 first (bit 34: VIRTIO_F_RING_PACKED)
echo "features=$(cat /sys/block/vda/device/features)"
p=1
while [ $p -le 2 ]; do
  dd if=/dev/urandom of=/tmp/pat bs=1M count=8 2>/dev/null
  c=0
  while [ $c -lt 8 ]; do
    dd if=/tmp/pat of=/dev/vda bs=1M skip=$c seek=$c count=1 oflag=direct 2>/dev/null
    c=$((c+1))
  done
  dd if=/dev/vda of=/tmp/back bs=1M count=8 iflag=direct 2>/dev/null
  a=$(sha1sum </tmp/pat); b=$(sha1sum </tmp/back)
  echo "pass=$p written=${a%% *} read=${b%% *}"
  [ "$a" = "$b" ]
  p=$((p+1))
done
echo "final=${a%% *}"
