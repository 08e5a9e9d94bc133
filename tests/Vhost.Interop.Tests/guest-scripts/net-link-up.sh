# Guest side: brings eth0 up so the virtio-net driver sets DRIVER_OK and the vhost-user device starts.
ip link set eth0 up
sleep 2
ip link show eth0
ip link show eth0 | grep -q 'state UP\|LOWER_UP\|,UP'
