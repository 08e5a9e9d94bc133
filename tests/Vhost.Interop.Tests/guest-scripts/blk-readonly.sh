# Guest side: /dev/vda is read-only; reading must work, writing must fail.
set -e
echo "ro=$(cat /sys/block/vda/ro)"
dd if=/dev/vda of=/dev/null bs=4k count=16 iflag=direct 2>/dev/null
if dd if=/dev/zero of=/dev/vda bs=4k count=1 oflag=direct 2>/dev/null; then echo "write succeeded"; exit 1; fi
echo "write refused"
