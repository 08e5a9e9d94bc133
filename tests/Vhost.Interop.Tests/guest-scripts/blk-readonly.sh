# Guest side of the read-only test: the disk says it is read-only, a direct write fails, a read works.
echo "ro=$(cat /sys/block/vda/ro)"
if dd if=/dev/zero of=/dev/vda bs=4k count=1 oflag=direct 2>/dev/null; then echo "write-succeeded"; exit 1; fi
echo "write-failed"
dd if=/dev/vda of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null || { echo "read-failed"; exit 1; }
echo "read-ok"
