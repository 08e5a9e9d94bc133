# Guest side: writes a known 1 MiB pattern at offset 0 of /dev/vda and flushes, for the host to check.
set -e
yes vhost-blk-pattern | head -c 1048576 > /tmp/p
dd if=/tmp/p of=/dev/vda bs=64k oflag=direct 2>/dev/null
sync
echo "pattern written"
