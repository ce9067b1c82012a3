// The machine's own spawn rate: keeps PARALLEL copies of COMMAND running with posix_spawn
// (stdin and output on /dev/null) until TOTAL have finished, and prints completions per second.
// The baseline for "finished exec steps/s" (SPEC §10): same command, same parallelism.
//
//   cc -O2 -o spawn_rate spawn_rate.c && ./spawn_rate [total=2000] [parallel=8] [command=/bin/true]
// Prints: spawned=N parallel=P seconds=S rate=R/s
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long total = argc > 1 ? atol(argv[1]) : 2000;
    long parallel = argc > 2 ? atol(argv[2]) : 8;
    char *command = argc > 3 ? argv[3] : "/bin/true";
    if (total < 1 || parallel < 1) {
        fprintf(stderr, "usage: %s [total] [parallel] [command]\n", argv[0]);
        return 2;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    char *args[] = {command, NULL};
    long started = 0, finished = 0, failed = 0, running = 0;
    double start = now();
    while (finished < total) {
        while (running < parallel && started < total) {
            pid_t pid;
            int rc = posix_spawn(&pid, command, &actions, NULL, args, environ);
            if (rc != 0) {
                fprintf(stderr, "posix_spawn %s: %d\n", command, rc);
                return 1;
            }
            started++;
            running++;
        }
        int status;
        pid_t done = waitpid(-1, &status, 0);
        if (done < 0) {
            if (errno == EINTR) continue;
            perror("waitpid");
            return 1;
        }
        running--;
        finished++;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
    }
    double seconds = now() - start;
    printf("spawned=%ld parallel=%ld failed=%ld seconds=%.3f rate=%.0f/s\n", finished, parallel, failed, seconds,
           (double)finished / seconds);
    return failed ? 1 : 0;
}
