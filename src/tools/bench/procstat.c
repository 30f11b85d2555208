/*
 * procstat.c - server CPU, context switches and memory from /proc, and
 * the measurement span (see procstat.h).
 */
#include "procstat.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

int procstat_cpu_s(long pid, double *cpu_s)
{
	char path[64], buf[4096], *p;
	unsigned long utime, stime;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	buf[n] = '\0';
	/* comm (field 2) may hold spaces and ')': fields restart after the last ')'. */
	p = strrchr(buf, ')');
	if (!p)
		return -EIO;
	/* After ')': state(3) ... utime(14) stime(15), i.e. the 12th and 13th. */
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) !=
	    2)
		return -EIO;
	*cpu_s = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
	return 0;
}

long long procstat_rss(long pid)
{
	char path[64], line[256];
	long long kb = -EIO;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lld kB", &kb) == 1)
			break;
	fclose(f);
	return kb < 0 ? kb : kb * 1024;
}

/* Voluntary + nonvoluntary switches of one thread. 0 or -errno. */
static int procstat_task_cs(long pid, const char *tid, uint64_t *cs)
{
	char path[320], line[256];
	unsigned long long v;
	int found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/task/%s/status", pid, tid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	*cs = 0;
	while (found < 2 && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "voluntary_ctxt_switches: %llu", &v) == 1 ||
		    sscanf(line, "nonvoluntary_ctxt_switches: %llu", &v) == 1) {
			*cs += v;
			found++;
		}
	}
	fclose(f);
	return found == 2 ? 0 : -EIO;
}

/*
 * Every thread of pids with its switch count into tasks (max entries).
 * Threads that exit while the directory is read are skipped. Returns the
 * count, or -errno (-E2BIG past max, the pid's error when a pid cannot
 * be read at all).
 */
static int procstat_tasks(const long *pids, int npids, struct procstat_task *tasks, int max)
{
	int i, n = 0;

	for (i = 0; i < npids; i++) {
		char path[64];
		struct dirent *de;
		DIR *d;

		snprintf(path, sizeof(path), "/proc/%ld/task", pids[i]);
		d = opendir(path);
		if (!d)
			return -errno;
		while ((de = readdir(d))) {
			uint64_t cs = 0;

			if (de->d_name[0] < '0' || de->d_name[0] > '9')
				continue;
			if (procstat_task_cs(pids[i], de->d_name, &cs))
				continue; /* gone meanwhile */
			if (n == max) {
				closedir(d);
				return -E2BIG;
			}
			tasks[n].tid = strtol(de->d_name, NULL, 10);
			tasks[n].cs = cs;
			n++;
		}
		closedir(d);
	}
	return n;
}

/* CPU seconds of every pid together; false if one is unreadable. */
static bool procstat_cpu_sum(const struct procstat_span *s, double *cpu_s)
{
	double sum = 0, one;
	int i;

	if (s->npids == 0)
		return false;
	for (i = 0; i < s->npids; i++) {
		if (procstat_cpu_s(s->pids[i], &one)) {
			fprintf(stderr, "ringchat-bench: cannot read /proc/%ld/stat\n", s->pids[i]);
			return false;
		}
		sum += one;
	}
	*cpu_s = sum;
	return true;
}

static double procstat_self_cpu_s(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) == -1)
		return 0;
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

void procstat_span_begin(struct procstat_span *s, const long *pids, int npids)
{
	int n;

	s->npids = npids < BENCH_MAX_PIDS ? npids : BENCH_MAX_PIDS;
	memcpy(s->pids, pids, (size_t)s->npids * sizeof(*pids));
	s->have = procstat_cpu_sum(s, &s->cpu0);
	s->cpu_s = 0;
	s->cs = 0;
	s->ntasks = 0;
	s->have_cs = false;
	if (s->have) {
		n = procstat_tasks(s->pids, s->npids, s->tasks, PROCSTAT_MAX_TASKS);
		if (n >= 0) {
			s->ntasks = n;
			s->have_cs = true;
		} else {
			fprintf(stderr, "ringchat-bench: server context switches unknown: %s\n",
				strerror(-n));
		}
	}
	s->self0 = procstat_self_cpu_s();
	s->self_s = 0;
}

void procstat_span_end(struct procstat_span *s)
{
	struct procstat_task *now = NULL;
	double cpu1;
	int i, k, n;

	s->self_s = procstat_self_cpu_s() - s->self0;
	if (s->have && procstat_cpu_sum(s, &cpu1))
		s->cpu_s = cpu1 - s->cpu0;
	else
		s->have = false;
	if (!s->have || !s->have_cs)
		goto out_no_cs;
	now = malloc(PROCSTAT_MAX_TASKS * sizeof(*now));
	if (!now)
		goto out_no_cs;
	n = procstat_tasks(s->pids, s->npids, now, PROCSTAT_MAX_TASKS);
	if (n < 0)
		goto out_no_cs;
	s->cs = 0;
	for (i = 0; i < n; i++) {
		uint64_t before = 0;

		/* A thread absent at the start was born inside the span. */
		for (k = 0; k < s->ntasks; k++)
			if (s->tasks[k].tid == now[i].tid) {
				before = s->tasks[k].cs;
				break;
			}
		if (now[i].cs > before)
			s->cs += now[i].cs - before;
	}
	free(now);
	return;

out_no_cs:
	free(now);
	s->have_cs = false;
}

void procstat_span_text(FILE *out, const struct procstat_span *s, double events, const char *what,
			const char *unit)
{
	if (!s->have) {
		fprintf(out, "  load generator cpu %.2f s\n", s->self_s);
		return;
	}
	fprintf(out, "  server cpu %.2f s  %.1f %s per cpu-second  (load generator cpu %.2f s)\n",
		s->cpu_s, s->cpu_s > 0 ? events / s->cpu_s : 0, what, s->self_s);
	if (events <= 0)
		return;
	fprintf(out, "  server per %s: %.1f us cpu", unit, s->cpu_s * 1e6 / events);
	if (s->have_cs)
		fprintf(out, ", %.3f context switches", (double)s->cs / events);
	fputc('\n', out);
}

void procstat_span_json(FILE *out, const struct procstat_span *s, double events, const char *what)
{
	fprintf(out, ",\"generator_cpu_s\":%.2f", s->self_s);
	if (!s->have)
		return;
	fprintf(out, ",\"server_cpu_s\":%.2f,\"%s_per_cpu_s\":%.1f", s->cpu_s, what,
		s->cpu_s > 0 ? events / s->cpu_s : 0);
	if (events > 0)
		fprintf(out, ",\"server_cpu_us_per_msg\":%.2f", s->cpu_s * 1e6 / events);
	if (!s->have_cs)
		return;
	fprintf(out, ",\"server_context_switches\":%" PRIu64, s->cs);
	if (events > 0)
		fprintf(out, ",\"server_cs_per_msg\":%.4f", (double)s->cs / events);
}
