/*
 * chq: run SQL statements with embedded ClickHouse (chDB's libchdb.so).
 *
 * Test and benchmark tooling only: it is how specs, fixture generators and
 * scripts/bench ask real ClickHouse to make data, BACKUP, RESTORE and count
 * rows. libchdb.so is loaded with dlopen, so nothing links against it.
 *
 *   chq --lib PATH/libchdb.so --path DATADIR [--config FILE] [--format FMT] SQL...
 *
 * Each SQL argument is one statement; results are written to stdout in FMT
 * (default TSV). The first failing statement prints its error and exits 1.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct chdb_result chdb_result;
typedef void *chdb_connection;

typedef chdb_connection *(*connect_fn)(int, char **);
typedef chdb_result *(*query_fn)(chdb_connection, const char *, const char *);
typedef char *(*buffer_fn)(chdb_result *);
typedef size_t (*length_fn)(chdb_result *);
typedef const char *(*error_fn)(chdb_result *);
typedef void (*destroy_fn)(chdb_result *);
typedef void (*close_fn)(chdb_connection *);

static void *need(void *lib, const char *name) {
  void *f = dlsym(lib, name);
  if (!f) {
    fprintf(stderr, "chq: libchdb.so has no symbol %s\n", name);
    exit(2);
  }
  return f;
}

int main(int argc, char **argv) {
  const char *lib_path = getenv("CHDB_LIB");
  const char *data_path = NULL, *config = NULL, *format = "TSV";
  int first_sql = argc;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--lib") && i + 1 < argc) lib_path = argv[++i];
    else if (!strcmp(argv[i], "--path") && i + 1 < argc) data_path = argv[++i];
    else if (!strcmp(argv[i], "--config") && i + 1 < argc) config = argv[++i];
    else if (!strcmp(argv[i], "--format") && i + 1 < argc) format = argv[++i];
    else { first_sql = i; break; }
  }
  if (!lib_path || !data_path || first_sql >= argc) {
    fprintf(stderr, "usage: chq --lib libchdb.so --path DIR [--config FILE] "
                    "[--format FMT] SQL...\n");
    return 2;
  }
  void *lib = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "chq: cannot load %s: %s\n", lib_path, dlerror());
    return 2;
  }
  connect_fn connect = (connect_fn)need(lib, "chdb_connect");
  query_fn query = (query_fn)need(lib, "chdb_query");
  buffer_fn buffer = (buffer_fn)need(lib, "chdb_result_buffer");
  length_fn length = (length_fn)need(lib, "chdb_result_length");
  error_fn error = (error_fn)need(lib, "chdb_result_error");
  destroy_fn destroy = (destroy_fn)need(lib, "chdb_destroy_query_result");
  close_fn close_conn = (close_fn)need(lib, "chdb_close_conn");

  char path_arg[4096], config_arg[4096];
  char *cargv[3];
  int cargc = 0;
  cargv[cargc++] = "clickhouse";
  snprintf(path_arg, sizeof path_arg, "--path=%s", data_path);
  cargv[cargc++] = path_arg;
  if (config) {
    snprintf(config_arg, sizeof config_arg, "--config-file=%s", config);
    cargv[cargc++] = config_arg;
  }
  chdb_connection *conn = connect(cargc, cargv);
  if (!conn) {
    fprintf(stderr, "chq: cannot open ClickHouse on %s\n", data_path);
    return 1;
  }
  int rc = 0;
  for (int i = first_sql; i < argc && rc == 0; i++) {
    chdb_result *r = query(*conn, argv[i], format);
    const char *err = r ? error(r) : "no result";
    if (err) {
      fprintf(stderr, "chq: %s\n  in: %s\n", err, argv[i]);
      rc = 1;
    } else if (length(r) > 0) {
      fwrite(buffer(r), 1, length(r), stdout);
    }
    if (r) destroy(r);
  }
  close_conn(conn);
  return rc;
}
