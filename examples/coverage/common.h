/* The line protocol both programs speak: one request line, one reply line. */
#ifndef COMMON_H
#define COMMON_H

#include <stddef.h>

#define PORT 7000

int send_line(int fd, const char *line);
int read_line(int fd, char *buf, size_t size);
unsigned checksum(const char *text);
void shout(char *text);
int check_reply(const char *sent, const char *reply);

#endif
