/*
 * client.h - a small blocking client of protocol v1, used by ringchat-cli
 * and the integration tests.
 *
 * One struct rc_client is one TCP connection (TCP_NODELAY). Calls block
 * up to the timeout they are given; a negative timeout waits forever.
 *
 * Frames come in two kinds: responses (seq of a request) and pushes (seq
 * 0). rc_call() waits for the response to the request it sends and keeps
 * every push that arrives meanwhile in an in-client queue, which
 * rc_next_push()/rc_wait_push() and rc_recv() return first, oldest first.
 * Responses nobody waits for (a call that timed out, a request sent with
 * rc_send() and never read) are dropped by rc_call() and rc_wait_push().
 *
 * Thread rules: a client belongs to one thread at a time; nothing locks.
 * Errors are returned as -errno and never left in errno alone, except by
 * rc_connect(), which returns NULL and sets errno.
 */
#ifndef RINGCHAT_CLIENT_H
#define RINGCHAT_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "ringchat/frame.h"

/* Pushes kept by rc_call() before it gives up with -ENOBUFS. */
#define RC_PUSH_QUEUE_MAX 100000u
/* How long rc_send() waits for room in a full socket send buffer. */
#define RC_SEND_TIMEOUT_MS 10000

struct rc_client;

/*
 * One received frame. payload is NUL-terminated and malloc'd (an empty
 * string when hdr.len is 0). json is the parsed payload: an empty object
 * when hdr.len is 0, NULL when the payload is not valid JSON. Both are
 * owned by the frame and released by rc_frame_free(); a caller may take
 * json over by setting the field to NULL first.
 */
struct rc_frame {
	struct frame_hdr hdr;
	char *payload;
	cJSON *json;
};

/* Releases what f owns and zeroes it; safe on a zeroed frame. */
void rc_frame_free(struct rc_frame *f);

/*
 * Connects to host:port (a name or a numeric address) within timeout_ms.
 * Returns the client, or NULL with errno set (ETIMEDOUT, ECONNREFUSED,
 * ENOENT for a name that does not resolve, ...). The caller owns the
 * client and releases it with rc_close().
 */
struct rc_client *rc_connect(const char *host, uint16_t port, int timeout_ms);

/* Closes the connection and frees everything, queued pushes included. */
void rc_close(struct rc_client *c);

/*
 * The socket, for poll loops (it is non-blocking). Readable means bytes
 * are waiting, but a queued push may be there already: check
 * rc_pending() too.
 */
int rc_fd(const struct rc_client *c);

/* Number of frames already received and queued inside the client. */
size_t rc_pending(const struct rc_client *c);

/*
 * Sends one frame with cmd, code 0, seq and json as payload (NULL = an
 * empty payload). Returns 0 once every byte is handed to the kernel,
 * -ETIMEDOUT when the send buffer stayed full RC_SEND_TIMEOUT_MS, or
 * -EPIPE/-ECONNRESET/... when the connection is gone.
 */
int rc_send(struct rc_client *c, uint16_t cmd, uint32_t seq, const char *json);

/* Sends n bytes exactly as given (bad-input tests). Returns as rc_send. */
int rc_send_raw(struct rc_client *c, const void *bytes, size_t n);

/*
 * Returns the next frame: a queued push first, else the next frame read
 * from the socket, whatever it is. Returns 0 and fills *out (the caller
 * frees it with rc_frame_free), -ETIMEDOUT when nothing complete arrived
 * in timeout_ms, -ENOTCONN when the node closed the connection (EOF),
 * -ECONNRESET or another -errno on a socket error, -EPROTO when the
 * stream is not protocol v1 (bad magic, or a frame above
 * FRAME_MAX_OUT_BYTES), -ENOMEM. After -ENOTCONN, -EPROTO or a socket
 * error the connection is dead: only rc_close() remains useful.
 */
int rc_recv(struct rc_client *c, struct rc_frame *out, int timeout_ms);

/*
 * Sends cmd with json (NULL = empty) and the client's next seq (starting
 * at 1, never 0), then waits for the frame carrying that seq. A frame with
 * cmd 0 and seq 0 (BAD_FRAME, FRAME_TOO_LARGE: the node closes after it)
 * is also taken as the answer. Pushes read meanwhile are queued.
 * Returns 0 with the response in *resp (any status: check resp->hdr.code),
 * or an error as rc_send/rc_recv, or -ENOBUFS when the push queue holds
 * RC_PUSH_QUEUE_MAX frames. timeout_ms bounds the whole call.
 */
int rc_call(struct rc_client *c, uint16_t cmd, const char *json, struct rc_frame *resp,
	    int timeout_ms);

/* The seq the next rc_call() will use. */
uint32_t rc_next_seq(const struct rc_client *c);

/*
 * Returns the oldest push (seq 0) whose cmd is cmd, or any push when cmd
 * is 0: first from the queue, then reading; pushes of other commands read
 * meanwhile stay queued, responses read meanwhile are dropped. Returns as
 * rc_recv.
 */
int rc_wait_push(struct rc_client *c, uint16_t cmd, struct rc_frame *out, int timeout_ms);

/* rc_wait_push(c, 0, out, timeout_ms): the next push of any kind. */
int rc_next_push(struct rc_client *c, struct rc_frame *out, int timeout_ms);

#endif
