/* Code linked into both programs: some of it runs on both machines, some only on
 * the server's, some only on the client's. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

/* Both: every request and reply goes out through here. */
int send_line(int fd, const char *line)
{
    size_t len = strlen(line);
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, line + done, len - done);
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return write(fd, "\n", 1) == 1 ? 0 : -1;
}

/* Both: reads up to a newline; -1 when the peer closed first. */
int read_line(int fd, char *buf, size_t size)
{
    size_t used = 0;
    while (used + 1 < size) {
        char c;
        ssize_t n = read(fd, &c, 1);
        if (n <= 0)
            return -1;
        if (c == '\n')
            break;
        buf[used++] = c;
    }
    buf[used] = '\0';
    return (int)used;
}

/* Both: the server signs its reply, the client checks the signature. */
unsigned checksum(const char *text)
{
    unsigned sum = 0;
    for (; *text; text++)
        sum = sum * 31 + (unsigned char)*text;
    return sum % 10000;
}

/* Server only: the reply is the request in capitals. */
void shout(char *text)
{
    for (; *text; text++)
        *text = (char)toupper((unsigned char)*text);
}

/* Client only: is the reply the request in capitals, correctly signed? */
int check_reply(const char *sent, const char *reply)
{
    char expected[512];
    unsigned sum;
    size_t i;
    for (i = 0; sent[i] && i + 1 < sizeof expected; i++)
        expected[i] = (char)toupper((unsigned char)sent[i]);
    expected[i] = '\0';
    if (sscanf(reply, "%u ", &sum) != 1) {
        fprintf(stderr, "client: malformed reply: %s\n", reply);
        return -1;
    }
    const char *text = strchr(reply, ' ');
    if (!text || strcmp(text + 1, expected) != 0 || sum != checksum(text + 1)) {
        fprintf(stderr, "client: wrong reply: %s\n", reply);
        return -1;
    }
    return 0;
}
