/*
 * messages.h - MSG_SEND, GROUP_SEND, MSG_ACK, HISTORY, the push of
 * unacknowledged messages at login, and the completions of the group-commit
 * writer. Handlers follow session.h.
 *
 * Threads: messages_start/stop on the main thread (before the workers
 * start / after they stopped); the rest on worker threads.
 */
#ifndef RINGCHAT_MESSAGES_H
#define RINGCHAT_MESSAGES_H

#include <stdbool.h>

struct cluster_req;
struct config;
struct req;
struct session;
struct worker;

void messages_send(struct req *r);
void messages_group_send(struct req *r);
void messages_ack(struct req *r);
void messages_history(struct req *r);

/* After LOGIN/RESUME: push every message s->user_id has not acknowledged
 * (1:1 and group), oldest first; holds the session's later frames while
 * the writer flushes the user's held unread marks. */
void messages_push_unacked(struct worker *w, struct session *s);

/* Worker: user acknowledged ids[0, n) on another node (cluster ACK): the
 * writer settles them as if acked here (nobody waits for an answer). */
void messages_remote_acks(struct worker *w, int64_t user, const int64_t *ids, size_t n);

/* Worker: pushes s's unacknowledged messages again, as at its login (after
 * an outage of the path to other nodes). */
void messages_repush(struct worker *w, struct session *s);

/*
 * Worker: has the writer store the unread marks it holds for user now;
 * with req (a KICK from another node), answers that node once they are
 * stored (cluster_kick_done). Returns 0, or -errno when nothing was
 * submitted (-ENOTSUP: marks are never held; the caller answers itself).
 */
int messages_flush_marks(struct worker *w, int64_t user, const struct cluster_req *req);

/* Worker thread: takes completions of the group-commit writer. Returns
 * true if any were handled. */
bool messages_poll(struct worker *w);
/* True while w has items out with the writer. */
bool messages_has_work(struct worker *w);

/*
 * Per-worker state for nworkers workers, and the group-commit writer.
 * wake(lane) must wake worker `lane` when the writer hands it completions
 * (the worker pool's worker_wake). Returns 0 or -errno.
 */
int messages_start(const struct config *cfg, int nworkers, void (*wake)(int lane));
void messages_stop(void);

#endif
