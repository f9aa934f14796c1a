/* A TCP client: sends each argument as a request to the server at ADDRESS (IPv4; no
 * name lookup, which a static program cannot do without glibc's NSS modules) and
 * checks the replies. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: client ADDRESS MESSAGE...\n");
        return 2;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(PORT)};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "client: %s is not an IPv4 address\n", argv[1]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("client: connect");
        return 1;
    }
    char reply[300];
    for (int i = 2; i < argc; i++) {
        if (send_line(fd, argv[i]) < 0 || read_line(fd, reply, sizeof reply) < 0) {
            fprintf(stderr, "client: connection lost\n");
            return 1;
        }
        if (check_reply(argv[i], reply) < 0)
            return 1;
        printf("%s\n", reply);
    }
    send_line(fd, "bye");
    close(fd);
    return 0;
}
