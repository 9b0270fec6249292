#!/bin/sh
# QEMU command of scenario boot-stock (accelerator tcg)
qemu-system-x86_64 \
  -name testbed-boot-stock \
  -machine q35 \
  -accel tcg,thread=multi \
  -cpu qemu64,+svm \
  -m 3072 \
  -smp 2 \
  -nodefaults \
  -no-user-config \
  -display none \
  -no-reboot \
  -S \
  -device intel-iommu,intremap=on \
  -kernel /images/xen-stock/xen \
  -append 'console=com1 com1=115200,8n1 conring_size=1M dom0_mem=1024M,max:1024M dom0_max_vcpus=1 iommu=on noreboot loglvl=all guest_loglvl=all' \
  -initrd '/images/kernel/vmlinuz console=hvc0 earlyprintk=xen,/run/testbed/dom0-initrd' \
  -chardev socket,id=serial0,path=/run/testbed/serial.sock,server=on,wait=off,logfile=/results/run/logs/console.log \
  -serial chardev:serial0 \
  -chardev socket,id=qmp0,path=/run/testbed/qmp.sock,server=on,wait=off \
  -mon chardev=qmp0,mode=control \
  -device virtio-serial-pci,id=vser0,addr=0x10 \
  -chardev socket,id=qga0,path=/run/testbed/qga.sock,server=on,wait=off \
  -device virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0 \
  -netdev socket,id=measured,udp=127.0.0.1:40011,localaddr=127.0.0.1:40010 \
  -device e1000e,netdev=measured,mac=52:54:00:12:34:01,addr=0x04 \
  -netdev socket,id=load,udp=127.0.0.1:40021,localaddr=127.0.0.1:40020 \
  -device e1000,netdev=load,mac=52:54:00:12:34:02,addr=0x05
