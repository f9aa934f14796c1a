/* Draws a picture on QEMU's standard VGA without a kernel driver, for the screen
 * tests: puts the virtual console in graphics mode (KDSETMODE on /dev/tty0), switches
 * the card to a linear-framebuffer mode through its Bochs VBE "dispi" registers
 * (I/O ports 0x1CE/0x1CF) and copies raw 32-bit BGRX pixels into the framebuffer
 * (the card's BAR 0, mapped through sysfs).
 *
 * usage: vbe_draw PIXELS WIDTH HEIGHT /sys/bus/pci/devices/XXXX/resource0
 */
#include <fcntl.h>
#include <linux/kd.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define DISPI_INDEX 0x1ce
#define DISPI_DATA 0x1cf
enum { ID, XRES, YRES, BPP, ENABLE };
#define ENABLED 0x01
#define LFB_ENABLED 0x40

static void dispi_write(unsigned short index, unsigned short value) {
    outw(index, DISPI_INDEX);
    outw(value, DISPI_DATA);
}

static unsigned short dispi_read(unsigned short index) {
    outw(index, DISPI_INDEX);
    return inw(DISPI_DATA);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: vbe_draw PIXELS WIDTH HEIGHT RESOURCE0\n");
        return 2;
    }
    int width = atoi(argv[2]), height = atoi(argv[3]);
    size_t size = (size_t)width * height * 4;
    int tty = open("/dev/tty0", O_RDWR | O_NOCTTY);
    if (tty < 0 || ioctl(tty, KDSETMODE, KD_GRAPHICS) < 0) {
        perror("vbe_draw: KDSETMODE KD_GRAPHICS on /dev/tty0");
        return 1;
    }
    /* Three ports: a 16-bit access at 0x1cf spans 0x1d0 too. */
    if (ioperm(DISPI_INDEX, 3, 1) < 0) {
        perror("vbe_draw: ioperm");
        return 1;
    }
    unsigned short id = dispi_read(ID);
    if ((id & 0xfff0) != 0xb0c0) {
        fprintf(stderr, "vbe_draw: no Bochs VBE registers (id 0x%04x)\n", id);
        return 1;
    }
    dispi_write(ENABLE, 0);
    dispi_write(XRES, width);
    dispi_write(YRES, height);
    dispi_write(BPP, 32);
    dispi_write(ENABLE, ENABLED | LFB_ENABLED);
    int fb = open(argv[4], O_RDWR | O_SYNC);
    if (fb < 0) {
        perror("vbe_draw: opening the framebuffer");
        return 1;
    }
    unsigned char *pixels = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fb, 0);
    if (pixels == MAP_FAILED) {
        perror("vbe_draw: mapping the framebuffer");
        return 1;
    }
    int in = open(argv[1], O_RDONLY);
    if (in < 0) {
        perror("vbe_draw: opening the pixels");
        return 1;
    }
    unsigned char *buf = malloc(size);
    if (buf == NULL) {
        perror("vbe_draw: malloc");
        return 1;
    }
    size_t done = 0;
    while (done < size) {
        ssize_t n = read(in, buf + done, size - done);
        if (n <= 0) {
            fprintf(stderr, "vbe_draw: the pixels end after %zu of %zu bytes\n", done, size);
            return 1;
        }
        done += (size_t)n;
    }
    for (size_t i = 0; i < size; i++)
        pixels[i] = buf[i];
    return 0;
}
