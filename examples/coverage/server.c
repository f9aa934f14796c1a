/* A TCP server: answers each request line with "<checksum> <LINE IN CAPITALS>".
 * SIGTERM ends it cleanly (main returns), so its coverage data gets written. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

static volatile sig_atomic_t stopping;

static void on_term(int sig)
{
    (void)sig;
    stopping = 1;
}

static void serve(int conn)
{
    char line[256];
    char reply[300];
    while (read_line(conn, line, sizeof line) >= 0) {
        if (strcmp(line, "bye") == 0)
            break;
        shout(line);
        snprintf(reply, sizeof reply, "%u %s", checksum(line), line);
        if (send_line(conn, reply) < 0)
            break;
    }
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term; /* no SA_RESTART: accept() returns EINTR */
    sigaction(SIGTERM, &sa, NULL);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(PORT)};
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 8) < 0) {
        perror("server: bind/listen");
        return 1;
    }
    printf("server: listening on port %d\n", PORT);
    fflush(stdout);
    while (!stopping) {
        int conn = accept(fd, NULL, NULL);
        if (conn < 0) {
            if (errno == EINTR)
                continue;
            perror("server: accept");
            return 1;
        }
        serve(conn);
        close(conn);
    }
    printf("server: stopping\n");
    return 0;
}
