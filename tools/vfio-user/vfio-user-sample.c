// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio-user-sample: sample vfio-user servers built on libvfio-user-server.
 *
 *   vfio-user-sample --socket /run/dma.sock [--device dma|null] ...
 *   vfio-user-sample --socket /run/dma%d.sock --count 64 [--threads 2] ...
 *
 * Serves one client at a time on a UNIX socket, accepts the next one when
 * it goes away, logs one line per client connect and disconnect to stderr,
 * and exits cleanly (removing the socket) on SIGTERM or SIGINT. Both
 * devices are migratable (vfio-user migration) unless --no-migration.
 * With --count N it serves N devices of the same model from this one
 * process (sockets from the %d template), through the library's device
 * loop (struct vus_loop): one per thread, devices dealt out in turn.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>

#include "sample.h"

/* getopt values of long options without a short one */
#define OPT_STRICT_DMA_REPLY	0x100
#define OPT_NO_MIGRATION	0x101
#define OPT_PRE_COPY		0x110
#define OPT_COUNT		0x102
#define OPT_THREADS		0x103

#define SAMPLE_MAX_COUNT	4096
#define SAMPLE_MAX_THREADS	64

static struct sample_backend *const backends[] = {
	&sample_dma_backend,
	&sample_null_backend,
};

static struct sample_backend *backend;
bool sample_verbose;

void sample_log(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "vfio-user-sample[%d]: ", getpid());
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int lib_print(enum vus_print_level level, const char *fmt, va_list ap)
{
	if (level != VUS_WARN && !sample_verbose)
		return 0;
	fprintf(stderr, "vfio-user-sample[%d]: ", getpid());
	return vfprintf(stderr, fmt, ap);
}

int sample_raise_irq(struct vus_dev *dev, unsigned int msix_vector)
{
	if (vus_dev__irq_enabled(dev, VFIO_PCI_MSIX_IRQ_INDEX, msix_vector))
		return vus_dev__trigger_irq(dev, VFIO_PCI_MSIX_IRQ_INDEX,
					    msix_vector);
	if (vus_dev__irq_enabled(dev, VFIO_PCI_MSI_IRQ_INDEX, 0))
		return vus_dev__trigger_irq(dev, VFIO_PCI_MSI_IRQ_INDEX, 0);
	if (vus_dev__irq_enabled(dev, VFIO_PCI_INTX_IRQ_INDEX, 0))
		return vus_dev__trigger_irq(dev, VFIO_PCI_INTX_IRQ_INDEX, 0);
	return -ENOENT;
}

static void on_connect(struct vus_dev *dev, void *priv)
{
	struct vus_peer_caps c;

	if (vus_dev__peer_caps(dev, &c))
		return;
	sample_log("client connected (protocol %u.%u, max_data_xfer_size %u, max_msg_fds %u, twin socket %s)",
		   c.major, c.minor, c.max_data_xfer_size, c.max_msg_fds,
		   vus_dev__twin_socket(dev) ? "yes" : "no");
}

static void on_disconnect(struct vus_dev *dev, void *priv)
{
	sample_log("client disconnected");
}

static int on_reset(struct vus_dev *dev, void *priv)
{
	if (backend->reset)
		backend->reset(priv);
	if (sample_verbose)
		sample_log("device reset");
	return 0;
}

/*
 * struct sample_dev - one device of this process: its own back-end state
 * (a copy of backend->priv) and socket path.
 */
struct sample_dev {
	struct vus_dev *dev;
	void *priv;
	char socket[108];
};

/*
 * struct sample_worker - one thread's share: a vus_loop and the devices in
 * it (every nr_workers-th one). Worker 0 is the main thread, which also
 * watches the signalfd; the others stop when @stop_efd is written.
 */
struct sample_worker {
	pthread_t thread;
	struct vus_loop *loop;
	struct sample_dev *devs;
	unsigned int first, step, count;
	int stop_efd;
	int ret;
};

static const struct vus_dev_ops sample_ops = {
	.connect = on_connect,
	.disconnect = on_disconnect,
	.reset = on_reset,
};

static const char *const mig_state_names[] = {
	"ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING_P2P",
	"PRE_COPY", "PRE_COPY_P2P",
};

static const char *mig_state_name(enum vus_mig_state s)
{
	return (unsigned int)s < sizeof(mig_state_names) / sizeof(mig_state_names[0]) ?
	       mig_state_names[s] : "?";
}

/*
 * The back ends need no transition callback: they ask vus_dev__running()
 * before any DMA or interrupt, and their background work (the DMA engine's
 * steps) runs from the main loop only while the device runs.
 */
static int on_transition(struct vus_dev *dev, void *priv,
			 enum vus_mig_state from, enum vus_mig_state to)
{
	if (sample_verbose)
		sample_log("migration: %s -> %s", mig_state_name(from),
			   mig_state_name(to));
	return 0;
}

static int on_save(struct vus_dev *dev, void *priv, struct vus_mig_stream *out,
		   bool final)
{
	int err = backend->save(dev, priv, out, final);

	if (sample_verbose && !vus_mig_stream__measuring(out))
		sample_log("migration: state saved: %s",
			   err ? strerror(-err) : "ok");
	return err;
}

static int on_load(struct vus_dev *dev, void *priv, struct vus_mig_stream *in,
		   uint32_t version, bool final)
{
	int err = backend->load(dev, priv, in, version, final);

	sample_log("migration: state of version %u loaded: %s", version,
		   err ? strerror(-err) : "ok");
	return err;
}

static const struct vus_mig_ops sample_mig_ops = {
	.transition = on_transition,
	.save = on_save,
	.load = on_load,
};

static void usage(FILE *f)
{
	unsigned int i;

	fprintf(f,
"Usage: vfio-user-sample --socket PATH [OPTIONS]\n"
"\n"
"A sample vfio-user server (device model in a process) built on\n"
"libvfio-user-server. It listens on PATH, serves one client at a time,\n"
"accepts the next client when one goes away, logs client connects and\n"
"disconnects to stderr and exits on SIGTERM/SIGINT.\n"
"\n"
"Options:\n"
"  -s, --socket PATH     UNIX socket to listen on (replaced if it exists);\n"
"                        with --count, a template: %%d becomes the\n"
"                        device number 0 ... N-1\n"
"      --count N         serve N devices (1 ... %u, default 1) of the\n"
"                        same model from this process; each has its own\n"
"                        socket, client and state\n"
"      --threads T       serve them from T threads (1 ... %u, default 1),\n"
"                        one library loop each; device i in thread i %% T\n"
"  -d, --device NAME     device model: dma (default), null\n"
"  -b, --bar-size BYTES  null: size of the large BAR2 (power of two,\n"
"                        default 256M; K/M/G suffixes)\n"
"  -m, --mmap            null: offer BAR4 for mmap with a sparse-mmap\n"
"                        capability (the region fd is sent with\n"
"                        GET_REGION_INFO)\n"
"  -x, --max-xfer BYTES  max_data_xfer_size to announce (default 1M;\n"
"                        K/M suffixes; the smaller of both sides is used)\n"
"  -t, --twin-socket     offer the twin socket: a client that asks for it\n"
"                        in VERSION gets a second socket (fd 0 of the\n"
"                        reply) that carries the server's DMA_READ/\n"
"                        DMA_WRITE and their replies alone\n"
"      --strict-dma-reply\n"
"                        (for tests) a client command that arrives on\n"
"                        the main socket while a DMA reply is awaited\n"
"                        there drops the client, as in libvfio-user;\n"
"                        default: it is queued. No effect on DMA over\n"
"                        the twin socket\n"
"      --no-migration    do not offer migration (DEVICE_FEATURE and\n"
"                        MIG_DATA_* get EOPNOTSUPP)\n"
"      --pre-copy        offer PRE_COPY (and PRE_COPY_P2P): a client may\n"
"                        read a first part of the device state while the\n"
"                        device runs; STOP_COPY then sends it all again\n"
"  -v, --verbose         log library messages, every DMA/IRQ and every\n"
"                        migration state change\n"
"  -h, --help            this text\n"
"\n"
"PCI IDs (test IDs, not assigned by the PCI-SIG): vendor 0x%04x,\n"
"class 0x%06x.\n", SAMPLE_MAX_COUNT, SAMPLE_MAX_THREADS, SAMPLE_VENDOR_ID,
		SAMPLE_CLASS_CODE);
	for (i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
		fprintf(f, "\n--device %s: vendor 0x%04x device 0x%04x\n%s",
			backends[i]->name, backends[i]->vendor_id,
			backends[i]->device_id, backends[i]->help);
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K':
		v <<= 10; end++; break;
	case 'm': case 'M':
		v <<= 20; end++; break;
	case 'g': case 'G':
		v <<= 30; end++; break;
	}
	if (*end || !v || (v & (v - 1)))
		return -EINVAL;
	*out = v;
	return 0;
}

/* @tmpl with its one "%d" replaced by @i (count > 1), else @tmpl itself */
static int sample_socket_path(char *buf, size_t len, const char *tmpl,
			      unsigned int i, unsigned int count)
{
	const char *p = strstr(tmpl, "%d");
	int n;

	if (count == 1 && !p)
		n = snprintf(buf, len, "%s", tmpl);
	else if (!p || strstr(p + 2, "%d") || strchr(p + 2, '%') ||
		 memchr(tmpl, '%', p - tmpl))
		return -EINVAL;
	else
		n = snprintf(buf, len, "%.*s%u%s", (int)(p - tmpl), tmpl, i,
			     p + 2);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int sample_dev_setup(struct sample_dev *sd, const struct sample_opts *o,
			    uint64_t max_xfer, bool twin, bool strict,
			    bool migration)
{
	VUS_OPTS(vus_dev_opts, dopts, .ops = &sample_ops, .priv = sd->priv,
		 .max_data_xfer_size = (uint32_t)max_xfer,
		 .twin_socket = twin, .strict_dma_reply = strict);
	VUS_OPTS(vus_pci_opts, popts, .vendor_id = backend->vendor_id,
		 .device_id = backend->device_id,
		 .subsys_vendor_id = backend->vendor_id,
		 .subsys_id = backend->device_id,
		 .class_code = SAMPLE_CLASS_CODE, .irq_pin = 1);
	VUS_OPTS(vus_mig_opts, mopts, .ops = &sample_mig_ops,
		 .version = backend->mig_version, .pre_copy = o->pre_copy);
	int err;

	sd->dev = vus_dev__new(&dopts);
	if (!sd->dev)
		return -errno;
	err = vus_dev__setup_pci(sd->dev, &popts);
	if (!err)
		err = backend->setup(sd->dev, o, sd->priv);
	if (!err && migration)
		err = vus_dev__setup_migration(sd->dev, &mopts);
	return err;
}

/*
 * Serve @w's loop until @stop_fd is readable: the loop's fd and @stop_fd
 * in one poll(), then the back end's background work of each device
 * (without sleeping while any has more).
 */
static int sample_serve(struct sample_worker *w, int stop_fd)
{
	struct pollfd pfd[2] = {
		{ .fd = vus_loop__fd(w->loop), .events = POLLIN },
		{ .fd = stop_fd, .events = POLLIN },
	};
	unsigned int i;
	int busy = 0, err;

	for (;;) {
		/* background work pending: look at the sockets, do not sleep */
		if (poll(pfd, 2, busy ? 0 : -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("poll");
			return -errno;
		}
		if (pfd[1].revents)
			return 0;
		if (pfd[0].revents) {
			err = vus_loop__process(w->loop);
			if (err < 0) {
				fprintf(stderr, "vus_loop__process: %s\n",
					strerror(-err));
				return err;
			}
		}
		busy = 0;
		if (!backend->work)
			continue;
		for (i = w->first; i < w->count; i += w->step) {
			struct sample_dev *sd = &w->devs[i];

			busy |= backend->work(sd->dev, sd->priv);
		}
	}
}

static void *sample_worker_thread(void *arg)
{
	struct sample_worker *w = arg;

	w->ret = sample_serve(w, w->stop_efd);
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "device", required_argument, NULL, 'd' },
		{ "bar-size", required_argument, NULL, 'b' },
		{ "mmap", no_argument, NULL, 'm' },
		{ "max-xfer", required_argument, NULL, 'x' },
		{ "twin-socket", no_argument, NULL, 't' },
		{ "strict-dma-reply", no_argument, NULL, OPT_STRICT_DMA_REPLY },
		{ "no-migration", no_argument, NULL, OPT_NO_MIGRATION },
		{ "pre-copy", no_argument, NULL, OPT_PRE_COPY },
		{ "count", required_argument, NULL, OPT_COUNT },
		{ "threads", required_argument, NULL, OPT_THREADS },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ },
	};
	struct sample_opts o = { .bar_size = 256ULL << 20 };
	const char *device = "dma";
	uint64_t max_xfer = 0;
	bool twin = false, strict = false, migration = true;
	unsigned int count = 1, nr_workers = 1, started;
	struct sample_dev *devs = NULL;
	struct sample_worker *w = NULL;
	int sfd = -1;
	sigset_t mask;
	unsigned int i;
	char *end;
	int c, err = 0, ret = 1;

	while ((c = getopt_long(argc, argv, "s:d:b:mx:tvh", lopts, NULL)) != -1) {
		switch (c) {
		case 's':
			o.socket = optarg;
			break;
		case 'd':
			device = optarg;
			break;
		case 'b':
			if (parse_size(optarg, &o.bar_size)) {
				fprintf(stderr, "bad --bar-size %s\n", optarg);
				return 2;
			}
			break;
		case 'm':
			o.mmap = true;
			break;
		case 'x':
			if (parse_size(optarg, &max_xfer) || max_xfer > UINT32_MAX) {
				fprintf(stderr, "bad --max-xfer %s\n", optarg);
				return 2;
			}
			break;
		case 't':
			twin = true;
			break;
		case OPT_STRICT_DMA_REPLY:
			strict = true;
			break;
		case OPT_NO_MIGRATION:
			migration = false;
			break;
		case OPT_PRE_COPY:
			o.pre_copy = true;
			break;
		case OPT_COUNT:
		case OPT_THREADS:
			errno = 0;
			i = strtoul(optarg, &end, 0);
			if (errno || *end || !i ||
			    i > (c == OPT_COUNT ? SAMPLE_MAX_COUNT :
					      SAMPLE_MAX_THREADS)) {
				fprintf(stderr, "bad --%s %s\n",
					c == OPT_COUNT ? "count" : "threads",
					optarg);
				return 2;
			}
			if (c == OPT_COUNT)
				count = i;
			else
				nr_workers = i;
			break;
		case 'v':
			o.verbose = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!o.socket || optind != argc) {
		usage(stderr);
		return 2;
	}
	for (i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
		if (!strcmp(device, backends[i]->name))
			backend = backends[i];
	if (!backend) {
		fprintf(stderr, "unknown --device %s\n", device);
		return 2;
	}
	sample_verbose = o.verbose;
	vus_set_print(lib_print);

	if (nr_workers > count)
		nr_workers = count;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	/* blocked in every thread: only the signalfd takes them */
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sfd < 0) {
		perror("signalfd");
		return 1;
	}

	devs = calloc(count, sizeof(*devs));
	w = calloc(nr_workers, sizeof(*w));
	if (!devs || !w) {
		perror("calloc");
		goto out;
	}
	for (i = 0; i < nr_workers; i++) {
		w[i] = (struct sample_worker){ .devs = devs, .first = i,
					       .step = nr_workers,
					       .count = count, .stop_efd = -1 };
		w[i].loop = vus_loop__new(NULL);
		if (!w[i].loop) {
			perror("vus_loop__new");
			goto out;
		}
		if (i) {
			w[i].stop_efd = eventfd(0, EFD_CLOEXEC);
			if (w[i].stop_efd < 0) {
				perror("eventfd");
				goto out;
			}
		}
	}
	for (i = 0; i < count; i++) {
		struct sample_dev *sd = &devs[i];

		err = sample_socket_path(sd->socket, sizeof(sd->socket),
					 o.socket, i, count);
		if (err) {
			fprintf(stderr, "--socket %s: %s\n", o.socket,
				err == -EINVAL ?
				"with --count > 1 it needs one %d and no other %" :
				strerror(-err));
			ret = 2;
			goto out;
		}
		sd->priv = count == 1 ? backend->priv :
			   calloc(1, backend->priv_size);
		if (!sd->priv) {
			perror("calloc");
			goto out;
		}
		err = sample_dev_setup(sd, &o, max_xfer, twin, strict,
				       migration);
		if (err) {
			fprintf(stderr, "device setup: %s\n", strerror(-err));
			goto out;
		}
		err = vus_dev__listen(sd->dev, sd->socket);
		if (err) {
			fprintf(stderr, "listen on %s: %s\n", sd->socket,
				strerror(-err));
			goto out;
		}
		err = vus_loop__add(w[i % nr_workers].loop, sd->dev);
		if (err) {
			fprintf(stderr, "vus_loop__add: %s\n", strerror(-err));
			goto out;
		}
		if (count == 1)
			sample_log("device %s (%04x:%04x) listening on %s",
				   backend->name, backend->vendor_id,
				   backend->device_id, sd->socket);
	}
	if (count > 1)
		sample_log("%u devices %s (%04x:%04x) in %u thread%s listening on %s",
			   count, backend->name, backend->vendor_id,
			   backend->device_id, nr_workers,
			   nr_workers > 1 ? "s" : "", o.socket);

	for (started = 1; started < nr_workers; started++) {
		err = pthread_create(&w[started].thread, NULL,
				     sample_worker_thread, &w[started]);
		if (err) {
			fprintf(stderr, "pthread_create: %s\n", strerror(err));
			break;
		}
	}
	ret = 1;
	if (started == nr_workers && !sample_serve(&w[0], sfd)) {
		struct signalfd_siginfo si;

		ret = 0;
		if (read(sfd, &si, sizeof(si)) == sizeof(si))
			sample_log("signal %u, exiting", si.ssi_signo);
	}
	for (i = 1; i < started; i++) {
		uint64_t one = 1;

		if (write(w[i].stop_efd, &one, sizeof(one)) != sizeof(one))
			perror("eventfd write");
		pthread_join(w[i].thread, NULL);
		if (w[i].ret)
			ret = 1;
	}
out:
	for (i = 0; w && i < nr_workers; i++) {
		vus_loop__delete(w[i].loop);
		if (w[i].stop_efd >= 0)
			close(w[i].stop_efd);
	}
	for (i = 0; devs && i < count; i++) {
		vus_dev__delete(devs[i].dev);
		if (devs[i].priv != backend->priv)
			free(devs[i].priv);
	}
	free(w);
	free(devs);
	close(sfd);
	return ret;
}
