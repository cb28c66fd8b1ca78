/* probe: socket checks busybox cannot make, for tests/sandbox.rs.
 * Built with `gcc -static` by the test and copied into the test image.
 *
 *   probe raw             socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
 *   probe packet          socket(AF_PACKET, SOCK_RAW, ETH_P_ALL)
 *   probe packet-write    one frame sent on an AF_PACKET socket bound to lo
 *   probe uds-connect P   connect to the Unix socket P, send "ping", print the reply
 *   probe uds-bind P      bind and listen on the Unix socket P, then exit
 *   probe uds-serve P [G] bind P (group G, mode 0660, as dockerd --group does) and
 *                         answer "pong" to every client, forever
 *   probe nnp             print the no_new_privs bit (gVisor's /proc/self/status lacks it)
 *
 * Each prints "<check>: ok" or "<check>: FAIL errno=N (text)" and exits 0 or 1. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int fail(const char *check) {
  int e = errno;
  printf("%s: FAIL errno=%d (%s)\n", check, e, strerror(e));
  return 1;
}

static int ok(const char *check) {
  printf("%s: ok\n", check);
  return 0;
}

static int open_close(const char *check, int domain, int type, int protocol) {
  int fd = socket(domain, type, protocol);
  if (fd < 0) return fail(check);
  close(fd);
  return ok(check);
}

static int packet_write(void) {
  int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
  if (fd < 0) return fail("packet-write");
  struct sockaddr_ll to;
  memset(&to, 0, sizeof to);
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(ETH_P_IP);
  to.sll_ifindex = if_nametoindex("lo");
  to.sll_halen = 6;
  unsigned char frame[60] = {0};
  frame[12] = 0x08; /* ethertype IPv4 */
  if (sendto(fd, frame, sizeof frame, 0, (struct sockaddr *)&to, sizeof to) < 0) return fail("packet-write");
  return ok("packet-write");
}

static int unix_socket(const char *path, struct sockaddr_un *address) {
  memset(address, 0, sizeof *address);
  address->sun_family = AF_UNIX;
  strncpy(address->sun_path, path, sizeof address->sun_path - 1);
  return socket(AF_UNIX, SOCK_STREAM, 0);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc < 2) return 2;
  const char *check = argv[1];
  if (!strcmp(check, "raw")) return open_close(check, AF_INET, SOCK_RAW, IPPROTO_ICMP);
  if (!strcmp(check, "packet")) return open_close(check, AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
  if (!strcmp(check, "packet-write")) return packet_write();
  if (!strcmp(check, "nnp")) {
    int bit = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
    if (bit < 0) return fail(check);
    printf("%s: %d\n", check, bit);
    return 0;
  }
  if (argc < 3) return 2;
  struct sockaddr_un address;
  int fd = unix_socket(argv[2], &address);
  if (fd < 0) return fail(check);
  if (!strcmp(check, "uds-connect")) {
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) return fail(check);
    char reply[64] = {0};
    if (write(fd, "ping\n", 5) != 5 || read(fd, reply, sizeof reply - 1) < 0) return fail(check);
    reply[strcspn(reply, "\n")] = 0;
    printf("%s: ok reply=%s\n", check, reply);
    return 0;
  }
  if (!strcmp(check, "uds-bind") || !strcmp(check, "uds-serve")) {
    unlink(argv[2]);
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0 || listen(fd, 16) < 0) return fail(check);
    /* Not fatal: runsc 20221219 refuses chown on a host-UDS socket (EPERM);
     * the test then sets what dockerd would from the host side. */
    if (argc > 3 && (chown(argv[2], -1, atoi(argv[3])) < 0 || chmod(argv[2], 0660) < 0)) fail("uds-serve-chown");
    ok(check);
    if (!strcmp(check, "uds-bind")) return 0;
    for (;;) {
      int client = accept(fd, NULL, NULL);
      if (client < 0) continue;
      char buffer[64];
      if (read(client, buffer, sizeof buffer) >= 0 && write(client, "pong\n", 5) < 0) perror("write");
      close(client);
    }
  }
  return 2;
}
