#!/bin/sh
# Build a throwaway initramfs around the static agent and boot it under QEMU (TCG).
#
#   guest-agent/scripts/dev-vm.sh DIR [extra kernel args]
#
# DIR receives x.cpio, agent.sock and serial.log; QEMU runs in the foreground with the
# serial console on stdout. Talk to it with:
#   cargo run -p flotilla-agent --example agent-client -- DIR/agent.sock run uname -r
set -eu
DIR=$1; shift
KDIR=${FLOTILLA_KERNEL_DIR:-$HOME/.cache/flotilla/kernel/current-amd64}
AGENT=${AGENT:-${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-musl/agent/flotilla-agent}
KVER=$(cat "$KDIR/version")
mkdir -p "$DIR"
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/bin" "$ROOT/etc/flotilla" "$ROOT/lib/modules/$KVER" "$ROOT/root"
cp "$AGENT" "$ROOT/init"
cp /bin/busybox "$ROOT/bin/busybox"
for applet in $(/bin/busybox --list-full); do
    mkdir -p "$ROOT/$(dirname "$applet")"
    [ -e "$ROOT/$applet" ] || ln -s /bin/busybox "$ROOT/$applet"
done
# Dependency order, from each module's .modinfo `depends=`.
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
         drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci drivers/char/virtio_console; do
    rel=lib/modules/$KVER/kernel/$m.ko
    mkdir -p "$ROOT/$(dirname "$rel")"
    cp "$KDIR/modules/kernel/$m.ko" "$ROOT/$rel"
    echo "/$rel" >> "$ROOT/etc/flotilla/modules"
done
(cd "$ROOT" && find . | cpio -o -H newc --quiet) > "$DIR/x.cpio"
exec qemu-system-x86_64 -M q35 -accel tcg -cpu max -m 256 -display none -nodefaults -no-reboot \
    -serial stdio -kernel "$KDIR/vmlinuz" -initrd "$DIR/x.cpio" \
    -append "console=ttyS0 quiet panic=-1 flotilla.hostname=test $*" \
    -device virtio-serial-pci \
    -chardev socket,id=agent,path="$DIR/agent.sock",server=on,wait=off \
    -device virtserialport,chardev=agent,name=org.flotilla.agent.0
