#include "chb_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

long chb_proc_spawn_detached(const char *const argv[], const char *log_path, chb_error *err) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return chb_error_errno(err, errno, "cannot create", "pipe");
  pid_t child = fork();
  if (child < 0) {
    close(pipefd[0]);
    close(pipefd[1]);
    return chb_error_errno(err, errno, "cannot fork", argv[0]);
  }
  if (child == 0) {
    /* Intermediate: new session, fork the real worker, report its pid. */
    close(pipefd[0]);
    setsid();
    pid_t worker = fork();
    if (worker != 0) {
      long pid = worker;
      ssize_t w = write(pipefd[1], &pid, sizeof pid);
      _exit(w == (ssize_t)sizeof pid ? 0 : 1);
    }
    int in = open("/dev/null", O_RDONLY);
    int out = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (in < 0 || out < 0) _exit(127);
    dup2(in, 0);
    dup2(out, 1);
    dup2(out, 2);
    execvp(argv[0], (char *const *)argv);
    _exit(127);
  }
  close(pipefd[1]);
  long pid = -1;
  ssize_t r = read(pipefd[0], &pid, sizeof pid);
  close(pipefd[0]);
  int status;
  waitpid(child, &status, 0);
  if (r != (ssize_t)sizeof pid || pid <= 0)
    return chb_error_set(err, CHB_EIO, "cannot start detached process %s", argv[0]);
  return pid;
}
