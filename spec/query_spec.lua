-- Specs for chbackup.query.
--
-- Every `expected` text below is what real ClickHouse 26.5 printed (embedded,
-- spec/tools/chq over chDB's libchdb.so, server time zone UTC, default
-- settings): ROWS were inserted into a table with system.backups' columns,
--   CREATE TABLE t (id String, name String, base_backup_name String,
--     query_id String, status Enum8('CREATING_BACKUP' = 0, ...,
--     'RESTORE_CANCELLED' = 7), error String, start_time DateTime64(6),
--     end_time DateTime64(6), num_files UInt64, ..., bytes_read UInt64)
--   ENGINE = MergeTree ORDER BY tuple()
--   INSERT INTO t VALUES (..., fromUnixTimestamp64Micro(<start_time>), ...)
-- and each case's `sql` ran against it. query.run gets the same rows and the
-- statement the SQL parser makes of that SQL, with { utc = true }. A case's
-- `max_rows` stands for its SETTINGS output_format_pretty_max_rows; the case
-- with `numbers` selects them directly (Vertical's " -- 1.23 million" tips).
-- The same cases also matched ClickHouse in local time (query.run without
-- utc, TZ=America/New_York, Europe/Berlin, Australia/Lord_Howe).
local query = require "chbackup.query"
local status = require "chbackup.status"


local function lines(list)
  return table.concat(list, "\n") .. "\n"
end


-- Rows as status:rows() returns them (sorted by start_time, then id);
-- times are microseconds since the epoch, shown in UTC.
local ROWS = {
  { id = "33980d58-9595-47b7-ae9e-8a04f6b5def4",
    name = "Disk('backups', 'b1')", base_backup_name = "",
    query_id = "49f83cfc-c5e2-497b-9c8b-8de9a0ff1470",
    status = "BACKUP_CREATED", error = "",
    start_time = 1795591856561697,  -- 2026-11-25 07:30:56.561697
    end_time = 1795591856566220,    -- 2026-11-25 07:30:56.566220
    num_files = 11, total_size = 7689, num_entries = 11,
    uncompressed_size = 9307, compressed_size = 9307,
    files_read = 0, bytes_read = 0, kind = "backup" },
  { id = "my id", name = "Disk('backups', 'b2')",
    base_backup_name = "Disk('backups', 'b1')",
    query_id = "267922d5-7252-4d9a-a164-c3a62017a168",
    status = "BACKUP_CREATED", error = "",
    start_time = 1795591862147847,  -- 2026-11-25 07:31:02.147847
    end_time = 1795591862152370,    -- 2026-11-25 07:31:02.152370
    num_files = 2, total_size = 1101, num_entries = 11,
    uncompressed_size = 9307, compressed_size = 1101,
    files_read = 0, bytes_read = 0, kind = "backup" },
  { id = "e2678baf-e4c0-4cbb-8b99-9689fe435d7b",
    name = "Disk('backups', 'b2')", base_backup_name = "", query_id = "q3",
    status = "RESTORED", error = "",
    start_time = 1795591920000000,  -- 2026-11-25 07:32:00.000000
    end_time = 1795591921500000,    -- 2026-11-25 07:32:01.500000
    num_files = 11, total_size = 9307, num_entries = 11,
    uncompressed_size = 9307, compressed_size = 9307,
    files_read = 11, bytes_read = 9307, kind = "restore" },
  { id = "f1", name = "Disk('backups', 'b1')", base_backup_name = "",
    query_id = "", status = "BACKUP_FAILED",
    error = "Code: 598. DB::Exception: Backup Disk('backups', 'b1') already"
      .. " exists. (BACKUP_ALREADY_EXISTS)\n\tat /tmp/x\\y \"q\" é €",
    start_time = 1795591980250000,  -- 2026-11-25 07:33:00.250000
    end_time = 1795591980260000,    -- 2026-11-25 07:33:00.260000
    num_files = 0, total_size = 0, num_entries = 0,
    uncompressed_size = 0, compressed_size = 0,
    files_read = 0, bytes_read = 0, kind = "backup" },
  { id = "c1", name = "File('/tmp/x.zip')", base_backup_name = "",
    query_id = "", status = "CREATING_BACKUP", error = "",
    start_time = 1795592040000001,  -- 2026-11-25 07:34:00.000001
    end_time = 0,
    num_files = 5, total_size = 123456789012345, num_entries = 0,
    uncompressed_size = 0, compressed_size = 0,
    files_read = 0, bytes_read = 0, kind = "backup", pid = 4242 },
  { id = "r9", name = "Disk('backups', 'b9')", base_backup_name = "",
    query_id = "", status = "RESTORE_FAILED",
    error = "Backup Disk('backups', 'b9') not found\r\0\1x\127",
    start_time = 1795651199999999,  -- 2026-11-25 23:59:59.999999
    end_time = 1795651200000000,    -- 2026-11-26 00:00:00.000000
    num_files = 0, total_size = 0, num_entries = 0,
    uncompressed_size = 0, compressed_size = 0,
    files_read = 0, bytes_read = 0, kind = "restore" },
  { id = "x_cancel", name = "Disk('backups', 'b%')", base_backup_name = "",
    query_id = "", status = "BACKUP_CANCELLED", error = "cancelled",
    start_time = 1795654800000000,  -- 2026-11-26 01:00:00.000000
    end_time = 1795654805000000,    -- 2026-11-26 01:00:05.000000
    num_files = 1, total_size = 0, num_entries = 0,
    uncompressed_size = 0, compressed_size = 0,
    files_read = 0, bytes_read = 0, kind = "backup" },
  { id = "rc", name = "Disk('backups', 'b1')", base_backup_name = "",
    query_id = "", status = "RESTORE_CANCELLED", error = "",
    start_time = 1795658400000000,  -- 2026-11-26 02:00:00.000000
    end_time = 1795658401000000,    -- 2026-11-26 02:00:01.000000
    num_files = 11, total_size = 9307, num_entries = 11,
    uncompressed_size = 9307, compressed_size = 9307,
    files_read = 2, bytes_read = 10, kind = "restore" },
  { id = "rr", name = "Disk('backups', 'b1')", base_backup_name = "",
    query_id = "", status = "RESTORING", error = "",
    start_time = 1795662000500000,  -- 2026-11-26 03:00:00.500000
    end_time = 0,
    num_files = 11, total_size = 9307, num_entries = 11,
    uncompressed_size = 9307, compressed_size = 9307,
    files_read = 3, bytes_read = 100, kind = "restore", pid = 4243 },
}


local CASES = {
  {
    sql = "SELECT * FROM t",
    stmt = { columns = "*" },
    expected = lines {
      "33980d58-9595-47b7-ae9e-8a04f6b5def4\tDisk(\\'backups\\', "
        .. "\\'b1\\')\t\t49f83cfc-c5e2-497b-9c8b-8de9a0ff1470\t"
        .. "BACKUP_CREATED\t\t2026-11-25 07:30:56.561697\t2026-11-25 "
        .. "07:30:56.566220\t11\t7689\t11\t9307\t9307\t0\t0",
      "my id\tDisk(\\'backups\\', \\'b2\\')\tDisk(\\'backups\\', "
        .. "\\'b1\\')\t267922d5-7252-4d9a-a164-c3a62017a168\t"
        .. "BACKUP_CREATED\t\t2026-11-25 07:31:02.147847\t2026-11-25 "
        .. "07:31:02.152370\t2\t1101\t11\t9307\t1101\t0\t0",
      "e2678baf-e4c0-4cbb-8b99-9689fe435d7b\tDisk(\\'backups\\', "
        .. "\\'b2\\')\t\tq3\tRESTORED\t\t2026-11-25 07:32:00.000000\t"
        .. "2026-11-25 07:32:01.500000\t11\t9307\t11\t9307\t9307\t11\t9307",
      "f1\tDisk(\\'backups\\', \\'b1\\')\t\t\tBACKUP_FAILED\tCode: 598. "
        .. "DB::Exception: Backup Disk(\\'backups\\', \\'b1\\') already "
        .. "exists. (BACKUP_ALREADY_EXISTS)\\n\\tat /tmp/x\\\\y \"q\" é €\t"
        .. "2026-11-25 07:33:00.250000\t2026-11-25 07:33:00.260000\t0\t0\t"
        .. "0\t0\t0\t0\t0",
      "c1\tFile(\\'/tmp/x.zip\\')\t\t\tCREATING_BACKUP\t\t2026-11-25 "
        .. "07:34:00.000001\t1970-01-01 00:00:00.000000\t5\t"
        .. "123456789012345\t0\t0\t0\t0\t0",
      "r9\tDisk(\\'backups\\', \\'b9\\')\t\t\tRESTORE_FAILED\tBackup "
        .. "Disk(\\'backups\\', \\'b9\\') not found\\r\\0\x01x\x7F\t"
        .. "2026-11-25 23:59:59.999999\t2026-11-26 00:00:00.000000\t0\t0\t"
        .. "0\t0\t0\t0\t0",
      "x_cancel\tDisk(\\'backups\\', \\'b%\\')\t\t\tBACKUP_CANCELLED\t"
        .. "cancelled\t2026-11-26 01:00:00.000000\t2026-11-26 "
        .. "01:00:05.000000\t1\t0\t0\t0\t0\t0\t0",
      "rc\tDisk(\\'backups\\', \\'b1\\')\t\t\tRESTORE_CANCELLED\t\t"
        .. "2026-11-26 02:00:00.000000\t2026-11-26 02:00:01.000000\t11\t"
        .. "9307\t11\t9307\t9307\t2\t10",
      "rr\tDisk(\\'backups\\', \\'b1\\')\t\t\tRESTORING\t\t2026-11-26 "
        .. "03:00:00.500000\t1970-01-01 00:00:00.000000\t11\t9307\t11\t"
        .. "9307\t9307\t3\t100",
    },
  },
  {
    sql = "SELECT * FROM t FORMAT TabSeparated",
    stmt = { columns = "*", format = "TabSeparated" },
    expected = lines {
      "33980d58-9595-47b7-ae9e-8a04f6b5def4\tDisk(\\'backups\\', "
        .. "\\'b1\\')\t\t49f83cfc-c5e2-497b-9c8b-8de9a0ff1470\t"
        .. "BACKUP_CREATED\t\t2026-11-25 07:30:56.561697\t2026-11-25 "
        .. "07:30:56.566220\t11\t7689\t11\t9307\t9307\t0\t0",
      "my id\tDisk(\\'backups\\', \\'b2\\')\tDisk(\\'backups\\', "
        .. "\\'b1\\')\t267922d5-7252-4d9a-a164-c3a62017a168\t"
        .. "BACKUP_CREATED\t\t2026-11-25 07:31:02.147847\t2026-11-25 "
        .. "07:31:02.152370\t2\t1101\t11\t9307\t1101\t0\t0",
      "e2678baf-e4c0-4cbb-8b99-9689fe435d7b\tDisk(\\'backups\\', "
        .. "\\'b2\\')\t\tq3\tRESTORED\t\t2026-11-25 07:32:00.000000\t"
        .. "2026-11-25 07:32:01.500000\t11\t9307\t11\t9307\t9307\t11\t9307",
      "f1\tDisk(\\'backups\\', \\'b1\\')\t\t\tBACKUP_FAILED\tCode: 598. "
        .. "DB::Exception: Backup Disk(\\'backups\\', \\'b1\\') already "
        .. "exists. (BACKUP_ALREADY_EXISTS)\\n\\tat /tmp/x\\\\y \"q\" é €\t"
        .. "2026-11-25 07:33:00.250000\t2026-11-25 07:33:00.260000\t0\t0\t"
        .. "0\t0\t0\t0\t0",
      "c1\tFile(\\'/tmp/x.zip\\')\t\t\tCREATING_BACKUP\t\t2026-11-25 "
        .. "07:34:00.000001\t1970-01-01 00:00:00.000000\t5\t"
        .. "123456789012345\t0\t0\t0\t0\t0",
      "r9\tDisk(\\'backups\\', \\'b9\\')\t\t\tRESTORE_FAILED\tBackup "
        .. "Disk(\\'backups\\', \\'b9\\') not found\\r\\0\x01x\x7F\t"
        .. "2026-11-25 23:59:59.999999\t2026-11-26 00:00:00.000000\t0\t0\t"
        .. "0\t0\t0\t0\t0",
      "x_cancel\tDisk(\\'backups\\', \\'b%\\')\t\t\tBACKUP_CANCELLED\t"
        .. "cancelled\t2026-11-26 01:00:00.000000\t2026-11-26 "
        .. "01:00:05.000000\t1\t0\t0\t0\t0\t0\t0",
      "rc\tDisk(\\'backups\\', \\'b1\\')\t\t\tRESTORE_CANCELLED\t\t"
        .. "2026-11-26 02:00:00.000000\t2026-11-26 02:00:01.000000\t11\t"
        .. "9307\t11\t9307\t9307\t2\t10",
      "rr\tDisk(\\'backups\\', \\'b1\\')\t\t\tRESTORING\t\t2026-11-26 "
        .. "03:00:00.500000\t1970-01-01 00:00:00.000000\t11\t9307\t11\t"
        .. "9307\t9307\t3\t100",
    },
  },
  {
    sql = "SELECT * FROM t FORMAT TSVWithNames",
    stmt = { columns = "*", format = "TSVWithNames" },
    expected = lines {
      "id\tname\tbase_backup_name\tquery_id\tstatus\terror\tstart_time\t"
        .. "end_time\tnum_files\ttotal_size\tnum_entries\t"
        .. "uncompressed_size\tcompressed_size\tfiles_read\tbytes_read",
      "33980d58-9595-47b7-ae9e-8a04f6b5def4\tDisk(\\'backups\\', "
        .. "\\'b1\\')\t\t49f83cfc-c5e2-497b-9c8b-8de9a0ff1470\t"
        .. "BACKUP_CREATED\t\t2026-11-25 07:30:56.561697\t2026-11-25 "
        .. "07:30:56.566220\t11\t7689\t11\t9307\t9307\t0\t0",
      "my id\tDisk(\\'backups\\', \\'b2\\')\tDisk(\\'backups\\', "
        .. "\\'b1\\')\t267922d5-7252-4d9a-a164-c3a62017a168\t"
        .. "BACKUP_CREATED\t\t2026-11-25 07:31:02.147847\t2026-11-25 "
        .. "07:31:02.152370\t2\t1101\t11\t9307\t1101\t0\t0",
      "e2678baf-e4c0-4cbb-8b99-9689fe435d7b\tDisk(\\'backups\\', "
        .. "\\'b2\\')\t\tq3\tRESTORED\t\t2026-11-25 07:32:00.000000\t"
        .. "2026-11-25 07:32:01.500000\t11\t9307\t11\t9307\t9307\t11\t9307",
      "f1\tDisk(\\'backups\\', \\'b1\\')\t\t\tBACKUP_FAILED\tCode: 598. "
        .. "DB::Exception: Backup Disk(\\'backups\\', \\'b1\\') already "
        .. "exists. (BACKUP_ALREADY_EXISTS)\\n\\tat /tmp/x\\\\y \"q\" é €\t"
        .. "2026-11-25 07:33:00.250000\t2026-11-25 07:33:00.260000\t0\t0\t"
        .. "0\t0\t0\t0\t0",
      "c1\tFile(\\'/tmp/x.zip\\')\t\t\tCREATING_BACKUP\t\t2026-11-25 "
        .. "07:34:00.000001\t1970-01-01 00:00:00.000000\t5\t"
        .. "123456789012345\t0\t0\t0\t0\t0",
      "r9\tDisk(\\'backups\\', \\'b9\\')\t\t\tRESTORE_FAILED\tBackup "
        .. "Disk(\\'backups\\', \\'b9\\') not found\\r\\0\x01x\x7F\t"
        .. "2026-11-25 23:59:59.999999\t2026-11-26 00:00:00.000000\t0\t0\t"
        .. "0\t0\t0\t0\t0",
      "x_cancel\tDisk(\\'backups\\', \\'b%\\')\t\t\tBACKUP_CANCELLED\t"
        .. "cancelled\t2026-11-26 01:00:00.000000\t2026-11-26 "
        .. "01:00:05.000000\t1\t0\t0\t0\t0\t0\t0",
      "rc\tDisk(\\'backups\\', \\'b1\\')\t\t\tRESTORE_CANCELLED\t\t"
        .. "2026-11-26 02:00:00.000000\t2026-11-26 02:00:01.000000\t11\t"
        .. "9307\t11\t9307\t9307\t2\t10",
      "rr\tDisk(\\'backups\\', \\'b1\\')\t\t\tRESTORING\t\t2026-11-26 "
        .. "03:00:00.500000\t1970-01-01 00:00:00.000000\t11\t9307\t11\t"
        .. "9307\t9307\t3\t100",
    },
  },
  {
    sql = "SELECT id, status, error FROM t FORMAT TabSeparatedWithNames",
    stmt = {
      columns = { "id", "status", "error" },
      format = "TabSeparatedWithNames",
    },
    expected = lines {
      "id\tstatus\terror",
      "33980d58-9595-47b7-ae9e-8a04f6b5def4\tBACKUP_CREATED\t",
      "my id\tBACKUP_CREATED\t",
      "e2678baf-e4c0-4cbb-8b99-9689fe435d7b\tRESTORED\t",
      "f1\tBACKUP_FAILED\tCode: 598. DB::Exception: Backup "
        .. "Disk(\\'backups\\', \\'b1\\') already exists. "
        .. "(BACKUP_ALREADY_EXISTS)\\n\\tat /tmp/x\\\\y \"q\" é €",
      "c1\tCREATING_BACKUP\t",
      "r9\tRESTORE_FAILED\tBackup Disk(\\'backups\\', \\'b9\\') not "
        .. "found\\r\\0\x01x\x7F",
      "x_cancel\tBACKUP_CANCELLED\tcancelled",
      "rc\tRESTORE_CANCELLED\t",
      "rr\tRESTORING\t",
    },
  },
  {
    sql = "SELECT id, status, start_time, total_size FROM t FORMAT "
      .. "TSVWithNamesAndTypes",
    stmt = {
      columns = { "id", "status", "start_time", "total_size" },
      format = "TSVWithNamesAndTypes",
    },
    expected = lines {
      "id\tstatus\tstart_time\ttotal_size",
      "String\tEnum8(\\'CREATING_BACKUP\\' = 0, \\'BACKUP_CREATED\\' = 1, "
        .. "\\'BACKUP_FAILED\\' = 2, \\'RESTORING\\' = 3, \\'RESTORED\\' = "
        .. "4, \\'RESTORE_FAILED\\' = 5, \\'BACKUP_CANCELLED\\' = 6, "
        .. "\\'RESTORE_CANCELLED\\' = 7)\tDateTime64(6)\tUInt64",
      "33980d58-9595-47b7-ae9e-8a04f6b5def4\tBACKUP_CREATED\t2026-11-25 "
        .. "07:30:56.561697\t7689",
      "my id\tBACKUP_CREATED\t2026-11-25 07:31:02.147847\t1101",
      "e2678baf-e4c0-4cbb-8b99-9689fe435d7b\tRESTORED\t2026-11-25 "
        .. "07:32:00.000000\t9307",
      "f1\tBACKUP_FAILED\t2026-11-25 07:33:00.250000\t0",
      "c1\tCREATING_BACKUP\t2026-11-25 07:34:00.000001\t123456789012345",
      "r9\tRESTORE_FAILED\t2026-11-25 23:59:59.999999\t0",
      "x_cancel\tBACKUP_CANCELLED\t2026-11-26 01:00:00.000000\t0",
      "rc\tRESTORE_CANCELLED\t2026-11-26 02:00:00.000000\t9307",
      "rr\tRESTORING\t2026-11-26 03:00:00.500000\t9307",
    },
  },
  {
    sql = "SELECT id, name, error FROM t FORMAT TSVRaw",
    stmt = { columns = { "id", "name", "error" }, format = "TSVRaw" },
    expected = lines {
      "33980d58-9595-47b7-ae9e-8a04f6b5def4\tDisk('backups', 'b1')\t",
      "my id\tDisk('backups', 'b2')\t",
      "e2678baf-e4c0-4cbb-8b99-9689fe435d7b\tDisk('backups', 'b2')\t",
      "f1\tDisk('backups', 'b1')\tCode: 598. DB::Exception: Backup "
        .. "Disk('backups', 'b1') already exists. (BACKUP_ALREADY_EXISTS)",
      "\tat /tmp/x\\y \"q\" é €",
      "c1\tFile('/tmp/x.zip')\t",
      "r9\tDisk('backups', 'b9')\tBackup Disk('backups', 'b9') not "
        .. "found\r\x00\x01x\x7F",
      "x_cancel\tDisk('backups', 'b%')\tcancelled",
      "rc\tDisk('backups', 'b1')\t",
      "rr\tDisk('backups', 'b1')\t",
    },
  },
  {
    sql = "SELECT id, error FROM t FORMAT TSVRawWithNames",
    stmt = { columns = { "id", "error" }, format = "TSVRawWithNames" },
    expected = lines {
      "id\terror",
      "33980d58-9595-47b7-ae9e-8a04f6b5def4\t",
      "my id\t",
      "e2678baf-e4c0-4cbb-8b99-9689fe435d7b\t",
      "f1\tCode: 598. DB::Exception: Backup Disk('backups', 'b1') already "
        .. "exists. (BACKUP_ALREADY_EXISTS)",
      "\tat /tmp/x\\y \"q\" é €",
      "c1\t",
      "r9\tBackup Disk('backups', 'b9') not found\r\x00\x01x\x7F",
      "x_cancel\tcancelled",
      "rc\t",
      "rr\t",
    },
  },
  {
    sql = "SELECT * FROM t FORMAT CSV",
    stmt = { columns = "*", format = "CSV" },
    expected = lines {
      "\"33980d58-9595-47b7-ae9e-8a04f6b5def4\",\"Disk('backups', "
        .. "'b1')\",\"\",\"49f83cfc-c5e2-497b-9c8b-8de9a0ff1470\",\"BACKUP_"
        .. "CREATED\",\"\",\"2026-11-25 07:30:56.561697\",\"2026-11-25 "
        .. "07:30:56.566220\",11,7689,11,9307,9307,0,0",
      "\"my id\",\"Disk('backups', 'b2')\",\"Disk('backups', "
        .. "'b1')\",\"267922d5-7252-4d9a-a164-c3a62017a168\",\"BACKUP_CREAT"
        .. "ED\",\"\",\"2026-11-25 07:31:02.147847\",\"2026-11-25 "
        .. "07:31:02.152370\",2,1101,11,9307,1101,0,0",
      "\"e2678baf-e4c0-4cbb-8b99-9689fe435d7b\",\"Disk('backups', "
        .. "'b2')\",\"\",\"q3\",\"RESTORED\",\"\",\"2026-11-25 "
        .. "07:32:00.000000\",\"2026-11-25 07:32:01.500000\",11,9307,11,930"
        .. "7,9307,11,9307",
      "\"f1\",\"Disk('backups', 'b1')\",\"\",\"\",\"BACKUP_FAILED\",\"Code:"
        .. " 598. DB::Exception: Backup Disk('backups', 'b1') already "
        .. "exists. (BACKUP_ALREADY_EXISTS)",
      "\tat /tmp/x\\y \"\"q\"\" é €\",\"2026-11-25 "
        .. "07:33:00.250000\",\"2026-11-25 07:33:00.260000\",0,0,0,0,0,0,0",
      "\"c1\",\"File('/tmp/x.zip')\",\"\",\"\",\"CREATING_BACKUP\",\"\",\"2"
        .. "026-11-25 07:34:00.000001\",\"1970-01-01 "
        .. "00:00:00.000000\",5,123456789012345,0,0,0,0,0",
      "\"r9\",\"Disk('backups', 'b9')\",\"\",\"\",\"RESTORE_FAILED\",\"Back"
        .. "up Disk('backups', 'b9') not "
        .. "found\r\x00\x01x\x7F\",\"2026-11-25 23:59:59.999999\",\"2026-11"
        .. "-26 00:00:00.000000\",0,0,0,0,0,0,0",
      "\"x_cancel\",\"Disk('backups', 'b%')\",\"\",\"\",\"BACKUP_CANCELLED"
        .. "\",\"cancelled\",\"2026-11-26 01:00:00.000000\",\"2026-11-26 "
        .. "01:00:05.000000\",1,0,0,0,0,0,0",
      "\"rc\",\"Disk('backups', 'b1')\",\"\",\"\",\"RESTORE_CANCELLED\",\""
        .. "\",\"2026-11-26 02:00:00.000000\",\"2026-11-26 "
        .. "02:00:01.000000\",11,9307,11,9307,9307,2,10",
      "\"rr\",\"Disk('backups', 'b1')\",\"\",\"\",\"RESTORING\",\"\",\"2026"
        .. "-11-26 03:00:00.500000\",\"1970-01-01 "
        .. "00:00:00.000000\",11,9307,11,9307,9307,3,100",
    },
  },
  {
    sql = "SELECT * FROM t FORMAT CSVWithNames",
    stmt = { columns = "*", format = "CSVWithNames" },
    expected = lines {
      "\"id\",\"name\",\"base_backup_name\",\"query_id\",\"status\",\"error"
        .. "\",\"start_time\",\"end_time\",\"num_files\",\"total_size\",\"n"
        .. "um_entries\",\"uncompressed_size\",\"compressed_size\",\"files_"
        .. "read\",\"bytes_read\"",
      "\"33980d58-9595-47b7-ae9e-8a04f6b5def4\",\"Disk('backups', "
        .. "'b1')\",\"\",\"49f83cfc-c5e2-497b-9c8b-8de9a0ff1470\",\"BACKUP_"
        .. "CREATED\",\"\",\"2026-11-25 07:30:56.561697\",\"2026-11-25 "
        .. "07:30:56.566220\",11,7689,11,9307,9307,0,0",
      "\"my id\",\"Disk('backups', 'b2')\",\"Disk('backups', "
        .. "'b1')\",\"267922d5-7252-4d9a-a164-c3a62017a168\",\"BACKUP_CREAT"
        .. "ED\",\"\",\"2026-11-25 07:31:02.147847\",\"2026-11-25 "
        .. "07:31:02.152370\",2,1101,11,9307,1101,0,0",
      "\"e2678baf-e4c0-4cbb-8b99-9689fe435d7b\",\"Disk('backups', "
        .. "'b2')\",\"\",\"q3\",\"RESTORED\",\"\",\"2026-11-25 "
        .. "07:32:00.000000\",\"2026-11-25 07:32:01.500000\",11,9307,11,930"
        .. "7,9307,11,9307",
      "\"f1\",\"Disk('backups', 'b1')\",\"\",\"\",\"BACKUP_FAILED\",\"Code:"
        .. " 598. DB::Exception: Backup Disk('backups', 'b1') already "
        .. "exists. (BACKUP_ALREADY_EXISTS)",
      "\tat /tmp/x\\y \"\"q\"\" é €\",\"2026-11-25 "
        .. "07:33:00.250000\",\"2026-11-25 07:33:00.260000\",0,0,0,0,0,0,0",
      "\"c1\",\"File('/tmp/x.zip')\",\"\",\"\",\"CREATING_BACKUP\",\"\",\"2"
        .. "026-11-25 07:34:00.000001\",\"1970-01-01 "
        .. "00:00:00.000000\",5,123456789012345,0,0,0,0,0",
      "\"r9\",\"Disk('backups', 'b9')\",\"\",\"\",\"RESTORE_FAILED\",\"Back"
        .. "up Disk('backups', 'b9') not "
        .. "found\r\x00\x01x\x7F\",\"2026-11-25 23:59:59.999999\",\"2026-11"
        .. "-26 00:00:00.000000\",0,0,0,0,0,0,0",
      "\"x_cancel\",\"Disk('backups', 'b%')\",\"\",\"\",\"BACKUP_CANCELLED"
        .. "\",\"cancelled\",\"2026-11-26 01:00:00.000000\",\"2026-11-26 "
        .. "01:00:05.000000\",1,0,0,0,0,0,0",
      "\"rc\",\"Disk('backups', 'b1')\",\"\",\"\",\"RESTORE_CANCELLED\",\""
        .. "\",\"2026-11-26 02:00:00.000000\",\"2026-11-26 "
        .. "02:00:01.000000\",11,9307,11,9307,9307,2,10",
      "\"rr\",\"Disk('backups', 'b1')\",\"\",\"\",\"RESTORING\",\"\",\"2026"
        .. "-11-26 03:00:00.500000\",\"1970-01-01 "
        .. "00:00:00.000000\",11,9307,11,9307,9307,3,100",
    },
  },
  {
    sql = "SELECT id, status, end_time, num_files FROM t FORMAT "
      .. "CSVWithNamesAndTypes",
    stmt = {
      columns = { "id", "status", "end_time", "num_files" },
      format = "CSVWithNamesAndTypes",
    },
    expected = lines {
      "\"id\",\"status\",\"end_time\",\"num_files\"",
      "\"String\",\"Enum8('CREATING_BACKUP' = 0, 'BACKUP_CREATED' = 1, "
        .. "'BACKUP_FAILED' = 2, 'RESTORING' = 3, 'RESTORED' = 4, "
        .. "'RESTORE_FAILED' = 5, 'BACKUP_CANCELLED' = 6, "
        .. "'RESTORE_CANCELLED' = 7)\",\"DateTime64(6)\",\"UInt64\"",
      "\"33980d58-9595-47b7-ae9e-8a04f6b5def4\",\"BACKUP_CREATED\",\"2026-1"
        .. "1-25 07:30:56.566220\",11",
      "\"my id\",\"BACKUP_CREATED\",\"2026-11-25 07:31:02.152370\",2",
      "\"e2678baf-e4c0-4cbb-8b99-9689fe435d7b\",\"RESTORED\",\"2026-11-25 "
        .. "07:32:01.500000\",11",
      "\"f1\",\"BACKUP_FAILED\",\"2026-11-25 07:33:00.260000\",0",
      "\"c1\",\"CREATING_BACKUP\",\"1970-01-01 00:00:00.000000\",5",
      "\"r9\",\"RESTORE_FAILED\",\"2026-11-26 00:00:00.000000\",0",
      "\"x_cancel\",\"BACKUP_CANCELLED\",\"2026-11-26 01:00:05.000000\",1",
      "\"rc\",\"RESTORE_CANCELLED\",\"2026-11-26 02:00:01.000000\",11",
      "\"rr\",\"RESTORING\",\"1970-01-01 00:00:00.000000\",11",
    },
  },
  {
    sql = "SELECT * FROM t FORMAT JSONEachRow",
    stmt = { columns = "*", format = "JSONEachRow" },
    expected = lines {
      "{\"id\":\"33980d58-9595-47b7-ae9e-8a04f6b5def4\",\"name\":\"Disk('ba"
        .. "ckups', 'b1')\",\"base_backup_name\":\"\",\"query_id\":\"49f83c"
        .. "fc-c5e2-497b-9c8b-8de9a0ff1470\",\"status\":\"BACKUP_CREATED\","
        .. "\"error\":\"\",\"start_time\":\"2026-11-25 "
        .. "07:30:56.561697\",\"end_time\":\"2026-11-25 "
        .. "07:30:56.566220\",\"num_files\":11,\"total_size\":7689,\"num_en"
        .. "tries\":11,\"uncompressed_size\":9307,\"compressed_size\":9307,"
        .. "\"files_read\":0,\"bytes_read\":0}",
      "{\"id\":\"my id\",\"name\":\"Disk('backups', "
        .. "'b2')\",\"base_backup_name\":\"Disk('backups', "
        .. "'b1')\",\"query_id\":\"267922d5-7252-4d9a-a164-c3a62017a168\","
        .. "\"status\":\"BACKUP_CREATED\",\"error\":\"\",\"start_time\":\"2"
        .. "026-11-25 07:31:02.147847\",\"end_time\":\"2026-11-25 "
        .. "07:31:02.152370\",\"num_files\":2,\"total_size\":1101,\"num_ent"
        .. "ries\":11,\"uncompressed_size\":9307,\"compressed_size\":1101,"
        .. "\"files_read\":0,\"bytes_read\":0}",
      "{\"id\":\"e2678baf-e4c0-4cbb-8b99-9689fe435d7b\",\"name\":\"Disk('ba"
        .. "ckups', 'b2')\",\"base_backup_name\":\"\",\"query_id\":\"q3\","
        .. "\"status\":\"RESTORED\",\"error\":\"\",\"start_time\":\"2026-11"
        .. "-25 07:32:00.000000\",\"end_time\":\"2026-11-25 "
        .. "07:32:01.500000\",\"num_files\":11,\"total_size\":9307,\"num_en"
        .. "tries\":11,\"uncompressed_size\":9307,\"compressed_size\":9307,"
        .. "\"files_read\":11,\"bytes_read\":9307}",
      "{\"id\":\"f1\",\"name\":\"Disk('backups', "
        .. "'b1')\",\"base_backup_name\":\"\",\"query_id\":\"\",\"status\":"
        .. "\"BACKUP_FAILED\",\"error\":\"Code: 598. DB::Exception: Backup "
        .. "Disk('backups', 'b1') already exists. "
        .. "(BACKUP_ALREADY_EXISTS)\\n\\tat \\/tmp\\/x\\\\y \\\"q\\\" é "
        .. "€\",\"start_time\":\"2026-11-25 "
        .. "07:33:00.250000\",\"end_time\":\"2026-11-25 "
        .. "07:33:00.260000\",\"num_files\":0,\"total_size\":0,\"num_entrie"
        .. "s\":0,\"uncompressed_size\":0,\"compressed_size\":0,\"files_rea"
        .. "d\":0,\"bytes_read\":0}",
      "{\"id\":\"c1\",\"name\":\"File('\\/tmp\\/x.zip')\",\"base_backup_nam"
        .. "e\":\"\",\"query_id\":\"\",\"status\":\"CREATING_BACKUP\",\"err"
        .. "or\":\"\",\"start_time\":\"2026-11-25 "
        .. "07:34:00.000001\",\"end_time\":\"1970-01-01 "
        .. "00:00:00.000000\",\"num_files\":5,\"total_size\":12345678901234"
        .. "5,\"num_entries\":0,\"uncompressed_size\":0,\"compressed_size\""
        .. ":0,\"files_read\":0,\"bytes_read\":0}",
      "{\"id\":\"r9\",\"name\":\"Disk('backups', "
        .. "'b9')\",\"base_backup_name\":\"\",\"query_id\":\"\",\"status\":"
        .. "\"RESTORE_FAILED\",\"error\":\"Backup Disk('backups', 'b9') "
        .. "not found\\r\\u0000\\u0001x\x7F\",\"start_time\":\"2026-11-25 "
        .. "23:59:59.999999\",\"end_time\":\"2026-11-26 "
        .. "00:00:00.000000\",\"num_files\":0,\"total_size\":0,\"num_entrie"
        .. "s\":0,\"uncompressed_size\":0,\"compressed_size\":0,\"files_rea"
        .. "d\":0,\"bytes_read\":0}",
      "{\"id\":\"x_cancel\",\"name\":\"Disk('backups', "
        .. "'b%')\",\"base_backup_name\":\"\",\"query_id\":\"\",\"status\":"
        .. "\"BACKUP_CANCELLED\",\"error\":\"cancelled\",\"start_time\":\"2"
        .. "026-11-26 01:00:00.000000\",\"end_time\":\"2026-11-26 "
        .. "01:00:05.000000\",\"num_files\":1,\"total_size\":0,\"num_entrie"
        .. "s\":0,\"uncompressed_size\":0,\"compressed_size\":0,\"files_rea"
        .. "d\":0,\"bytes_read\":0}",
      "{\"id\":\"rc\",\"name\":\"Disk('backups', "
        .. "'b1')\",\"base_backup_name\":\"\",\"query_id\":\"\",\"status\":"
        .. "\"RESTORE_CANCELLED\",\"error\":\"\",\"start_time\":\"2026-11-2"
        .. "6 02:00:00.000000\",\"end_time\":\"2026-11-26 "
        .. "02:00:01.000000\",\"num_files\":11,\"total_size\":9307,\"num_en"
        .. "tries\":11,\"uncompressed_size\":9307,\"compressed_size\":9307,"
        .. "\"files_read\":2,\"bytes_read\":10}",
      "{\"id\":\"rr\",\"name\":\"Disk('backups', "
        .. "'b1')\",\"base_backup_name\":\"\",\"query_id\":\"\",\"status\":"
        .. "\"RESTORING\",\"error\":\"\",\"start_time\":\"2026-11-26 "
        .. "03:00:00.500000\",\"end_time\":\"1970-01-01 "
        .. "00:00:00.000000\",\"num_files\":11,\"total_size\":9307,\"num_en"
        .. "tries\":11,\"uncompressed_size\":9307,\"compressed_size\":9307,"
        .. "\"files_read\":3,\"bytes_read\":100}",
    },
  },
  {
    sql = "SELECT id, error, total_size FROM t FORMAT NDJSON",
    stmt = { columns = { "id", "error", "total_size" }, format = "NDJSON" },
    expected = lines {
      "{\"id\":\"33980d58-9595-47b7-ae9e-8a04f6b5def4\",\"error\":\"\",\"to"
        .. "tal_size\":7689}",
      "{\"id\":\"my id\",\"error\":\"\",\"total_size\":1101}",
      "{\"id\":\"e2678baf-e4c0-4cbb-8b99-9689fe435d7b\",\"error\":\"\",\"to"
        .. "tal_size\":9307}",
      "{\"id\":\"f1\",\"error\":\"Code: 598. DB::Exception: Backup "
        .. "Disk('backups', 'b1') already exists. "
        .. "(BACKUP_ALREADY_EXISTS)\\n\\tat \\/tmp\\/x\\\\y \\\"q\\\" é "
        .. "€\",\"total_size\":0}",
      "{\"id\":\"c1\",\"error\":\"\",\"total_size\":123456789012345}",
      "{\"id\":\"r9\",\"error\":\"Backup Disk('backups', 'b9') not "
        .. "found\\r\\u0000\\u0001x\x7F\",\"total_size\":0}",
      "{\"id\":\"x_cancel\",\"error\":\"cancelled\",\"total_size\":0}",
      "{\"id\":\"rc\",\"error\":\"\",\"total_size\":9307}",
      "{\"id\":\"rr\",\"error\":\"\",\"total_size\":9307}",
    },
  },
  {
    sql = "SELECT * FROM t FORMAT Vertical",
    stmt = { columns = "*", format = "Vertical" },
    expected = lines {
      "Row 1:",
      "──────",
      "id:                33980d58-9595-47b7-ae9e-8a04f6b5def4",
      "name:              Disk('backups', 'b1')",
      "base_backup_name:  ",
      "query_id:          49f83cfc-c5e2-497b-9c8b-8de9a0ff1470",
      "status:            BACKUP_CREATED",
      "error:             ",
      "start_time:        2026-11-25 07:30:56.561697",
      "end_time:          2026-11-25 07:30:56.566220",
      "num_files:         11",
      "total_size:        7689",
      "num_entries:       11",
      "uncompressed_size: 9307",
      "compressed_size:   9307",
      "files_read:        0",
      "bytes_read:        0",
      "",
      "Row 2:",
      "──────",
      "id:                my id",
      "name:              Disk('backups', 'b2')",
      "base_backup_name:  Disk('backups', 'b1')",
      "query_id:          267922d5-7252-4d9a-a164-c3a62017a168",
      "status:            BACKUP_CREATED",
      "error:             ",
      "start_time:        2026-11-25 07:31:02.147847",
      "end_time:          2026-11-25 07:31:02.152370",
      "num_files:         2",
      "total_size:        1101",
      "num_entries:       11",
      "uncompressed_size: 9307",
      "compressed_size:   1101",
      "files_read:        0",
      "bytes_read:        0",
      "",
      "Row 3:",
      "──────",
      "id:                e2678baf-e4c0-4cbb-8b99-9689fe435d7b",
      "name:              Disk('backups', 'b2')",
      "base_backup_name:  ",
      "query_id:          q3",
      "status:            RESTORED",
      "error:             ",
      "start_time:        2026-11-25 07:32:00.000000",
      "end_time:          2026-11-25 07:32:01.500000",
      "num_files:         11",
      "total_size:        9307",
      "num_entries:       11",
      "uncompressed_size: 9307",
      "compressed_size:   9307",
      "files_read:        11",
      "bytes_read:        9307",
      "",
      "Row 4:",
      "──────",
      "id:                f1",
      "name:              Disk('backups', 'b1')",
      "base_backup_name:  ",
      "query_id:          ",
      "status:            BACKUP_FAILED",
      "error:             Code: 598. DB::Exception: Backup Disk('backups', "
        .. "'b1') already exists. (BACKUP_ALREADY_EXISTS)",
      "\tat /tmp/x\\y \"q\" é €",
      "start_time:        2026-11-25 07:33:00.250000",
      "end_time:          2026-11-25 07:33:00.260000",
      "num_files:         0",
      "total_size:        0",
      "num_entries:       0",
      "uncompressed_size: 0",
      "compressed_size:   0",
      "files_read:        0",
      "bytes_read:        0",
      "",
      "Row 5:",
      "──────",
      "id:                c1",
      "name:              File('/tmp/x.zip')",
      "base_backup_name:  ",
      "query_id:          ",
      "status:            CREATING_BACKUP",
      "error:             ",
      "start_time:        2026-11-25 07:34:00.000001",
      "end_time:          1970-01-01 00:00:00.000000",
      "num_files:         5",
      "total_size:        123456789012345 -- 123.46 trillion",
      "num_entries:       0",
      "uncompressed_size: 0",
      "compressed_size:   0",
      "files_read:        0",
      "bytes_read:        0",
      "",
      "Row 6:",
      "──────",
      "id:                r9",
      "name:              Disk('backups', 'b9')",
      "base_backup_name:  ",
      "query_id:          ",
      "status:            RESTORE_FAILED",
      "error:             Backup Disk('backups', 'b9') not "
        .. "found\r\x00\x01x\x7F",
      "start_time:        2026-11-25 23:59:59.999999",
      "end_time:          2026-11-26 00:00:00.000000",
      "num_files:         0",
      "total_size:        0",
      "num_entries:       0",
      "uncompressed_size: 0",
      "compressed_size:   0",
      "files_read:        0",
      "bytes_read:        0",
      "",
      "Row 7:",
      "──────",
      "id:                x_cancel",
      "name:              Disk('backups', 'b%')",
      "base_backup_name:  ",
      "query_id:          ",
      "status:            BACKUP_CANCELLED",
      "error:             cancelled",
      "start_time:        2026-11-26 01:00:00.000000",
      "end_time:          2026-11-26 01:00:05.000000",
      "num_files:         1",
      "total_size:        0",
      "num_entries:       0",
      "uncompressed_size: 0",
      "compressed_size:   0",
      "files_read:        0",
      "bytes_read:        0",
      "",
      "Row 8:",
      "──────",
      "id:                rc",
      "name:              Disk('backups', 'b1')",
      "base_backup_name:  ",
      "query_id:          ",
      "status:            RESTORE_CANCELLED",
      "error:             ",
      "start_time:        2026-11-26 02:00:00.000000",
      "end_time:          2026-11-26 02:00:01.000000",
      "num_files:         11",
      "total_size:        9307",
      "num_entries:       11",
      "uncompressed_size: 9307",
      "compressed_size:   9307",
      "files_read:        2",
      "bytes_read:        10",
      "",
      "Row 9:",
      "───────",
      "id:                rr",
      "name:              Disk('backups', 'b1')",
      "base_backup_name:  ",
      "query_id:          ",
      "status:            RESTORING",
      "error:             ",
      "start_time:        2026-11-26 03:00:00.500000",
      "end_time:          1970-01-01 00:00:00.000000",
      "num_files:         11",
      "total_size:        9307",
      "num_entries:       11",
      "uncompressed_size: 9307",
      "compressed_size:   9307",
      "files_read:        3",
      "bytes_read:        100",
    },
  },
  {
    sql = "SELECT id, error FROM t WHERE id IN ('f1', 'r9') FORMAT vertical",
    stmt = {
      columns = { "id", "error" },
      where = { op = "in", column = "id", values = { "f1", "r9" } },
      format = "vertical",
    },
    expected = lines {
      "Row 1:",
      "──────",
      "id:    f1",
      "error: Code: 598. DB::Exception: Backup Disk('backups', 'b1') "
        .. "already exists. (BACKUP_ALREADY_EXISTS)",
      "\tat /tmp/x\\y \"q\" é €",
      "",
      "Row 2:",
      "──────",
      "id:    r9",
      "error: Backup Disk('backups', 'b9') not found\r\x00\x01x\x7F",
    },
  },
  {
    sql = "SELECT id, status FROM t FORMAT Vertical SETTINGS "
      .. "output_format_pretty_max_rows = 2",
    stmt = { columns = { "id", "status" }, format = "Vertical" },
    max_rows = 2,
    expected = lines {
      "Row 1:",
      "──────",
      "id:     33980d58-9595-47b7-ae9e-8a04f6b5def4",
      "status: BACKUP_CREATED",
      "",
      "Row 2:",
      "──────",
      "id:     my id",
      "status: BACKUP_CREATED",
      "",
      "Showed first 2.",
    },
  },
  {
    sql = "SELECT id, status, error FROM t WHERE status IN "
      .. "('BACKUP_FAILED', 'RESTORE_FAILED') OR error LIKE '%exists%' "
      .. "ORDER BY start_time DESC",
    stmt = {
      columns = { "id", "status", "error" },
      where = {
        op = "or",
        args = {
          {
            op = "in",
            column = "status",
            values = { "BACKUP_FAILED", "RESTORE_FAILED" },
          },
          { op = "like", column = "error", value = "%exists%" },
        },
      },
      order_by = { { column = "start_time", desc = true } },
    },
    expected = lines {
      "r9\tRESTORE_FAILED\tBackup Disk(\\'backups\\', \\'b9\\') not "
        .. "found\\r\\0\x01x\x7F",
      "f1\tBACKUP_FAILED\tCode: 598. DB::Exception: Backup "
        .. "Disk(\\'backups\\', \\'b1\\') already exists. "
        .. "(BACKUP_ALREADY_EXISTS)\\n\\tat /tmp/x\\\\y \"q\" é €",
    },
  },
  {
    sql = "SELECT id FROM t WHERE NOT (status = 'BACKUP_CREATED') AND "
      .. "num_files > 1 ORDER BY id",
    stmt = {
      columns = { "id" },
      where = {
        op = "and",
        args = {
          {
            op = "not",
            arg = { op = "=", column = "status", value = "BACKUP_CREATED" },
          },
          { op = ">", column = "num_files", value = 1 },
        },
      },
      order_by = { { column = "id" } },
    },
    expected = lines {
      "c1",
      "e2678baf-e4c0-4cbb-8b99-9689fe435d7b",
      "rc",
      "rr",
    },
  },
  {
    sql = "SELECT id, status FROM t ORDER BY status, start_time DESC LIMIT "
      .. "5",
    stmt = {
      columns = { "id", "status" },
      order_by = {
        { column = "status" },
        { column = "start_time", desc = true },
      },
      limit = 5,
    },
    expected = lines {
      "c1\tCREATING_BACKUP",
      "my id\tBACKUP_CREATED",
      "33980d58-9595-47b7-ae9e-8a04f6b5def4\tBACKUP_CREATED",
      "f1\tBACKUP_FAILED",
      "rr\tRESTORING",
    },
  },
  {
    sql = "SELECT id, status FROM t ORDER BY status DESC, id LIMIT 3 "
      .. "OFFSET 2",
    stmt = {
      columns = { "id", "status" },
      order_by = { { column = "status", desc = true }, { column = "id" } },
      limit = 3,
      offset = 2,
    },
    expected = lines {
      "r9\tRESTORE_FAILED",
      "e2678baf-e4c0-4cbb-8b99-9689fe435d7b\tRESTORED",
      "rr\tRESTORING",
    },
  },
  {
    sql = "SELECT id, start_time FROM t WHERE start_time >= '2026-11-25 "
      .. "07:32:00' AND start_time < '2026-11-26'",
    stmt = {
      columns = { "id", "start_time" },
      where = {
        op = "and",
        args = {
          { op = ">=", column = "start_time", value = "2026-11-25 07:32:00" },
          { op = "<", column = "start_time", value = "2026-11-26" },
        },
      },
    },
    expected = lines {
      "e2678baf-e4c0-4cbb-8b99-9689fe435d7b\t2026-11-25 07:32:00.000000",
      "f1\t2026-11-25 07:33:00.250000",
      "c1\t2026-11-25 07:34:00.000001",
      "r9\t2026-11-25 23:59:59.999999",
    },
  },
  {
    sql = "SELECT id, start_time FROM t WHERE start_time = '2026-11-25 "
      .. "07:31:02.147847' OR start_time > 1795654800",
    stmt = {
      columns = { "id", "start_time" },
      where = {
        op = "or",
        args = {
          {
            op = "=",
            column = "start_time",
            value = "2026-11-25 07:31:02.147847",
          },
          { op = ">", column = "start_time", value = 1795654800 },
        },
      },
    },
    expected = lines {
      "my id\t2026-11-25 07:31:02.147847",
      "rc\t2026-11-26 02:00:00.000000",
      "rr\t2026-11-26 03:00:00.500000",
    },
  },
  {
    sql = "SELECT id, name FROM t WHERE name LIKE 'Disk(''backups'', "
      .. "''b_'')'",
    stmt = {
      columns = { "id", "name" },
      where = {
        op = "like",
        column = "name",
        value = "Disk('backups', 'b_')",
      },
    },
    expected = lines {
      "33980d58-9595-47b7-ae9e-8a04f6b5def4\tDisk(\\'backups\\', \\'b1\\')",
      "my id\tDisk(\\'backups\\', \\'b2\\')",
      "e2678baf-e4c0-4cbb-8b99-9689fe435d7b\tDisk(\\'backups\\', \\'b2\\')",
      "f1\tDisk(\\'backups\\', \\'b1\\')",
      "r9\tDisk(\\'backups\\', \\'b9\\')",
      "x_cancel\tDisk(\\'backups\\', \\'b%\\')",
      "rc\tDisk(\\'backups\\', \\'b1\\')",
      "rr\tDisk(\\'backups\\', \\'b1\\')",
    },
  },
  {
    sql = "SELECT id, name FROM t WHERE name LIKE '%b\\\\%%'",
    stmt = {
      columns = { "id", "name" },
      where = { op = "like", column = "name", value = "%b\\%%" },
    },
    expected = lines {
      "x_cancel\tDisk(\\'backups\\', \\'b%\\')",
    },
  },
  {
    sql = "SELECT id FROM t WHERE id LIKE '_1' OR error LIKE '%é _'",
    stmt = {
      columns = { "id" },
      where = {
        op = "or",
        args = {
          { op = "like", column = "id", value = "_1" },
          { op = "like", column = "error", value = "%é _" },
        },
      },
    },
    expected = lines {
      "f1",
      "c1",
    },
  },
  {
    sql = "SELECT id, status FROM t WHERE status < 'RESTORING' ORDER BY id",
    stmt = {
      columns = { "id", "status" },
      where = { op = "<", column = "status", value = "RESTORING" },
      order_by = { { column = "id" } },
    },
    expected = lines {
      "33980d58-9595-47b7-ae9e-8a04f6b5def4\tBACKUP_CREATED",
      "c1\tCREATING_BACKUP",
      "f1\tBACKUP_FAILED",
      "my id\tBACKUP_CREATED",
    },
  },
  {
    sql = "SELECT id, status FROM t WHERE status LIKE 'RESTORE%' AND "
      .. "status != 'RESTORED'",
    stmt = {
      columns = { "id", "status" },
      where = {
        op = "and",
        args = {
          { op = "like", column = "status", value = "RESTORE%" },
          { op = "!=", column = "status", value = "RESTORED" },
        },
      },
    },
    expected = lines {
      "r9\tRESTORE_FAILED",
      "rc\tRESTORE_CANCELLED",
    },
  },
  {
    sql = "SELECT id, num_files, total_size FROM t WHERE num_files = '11' "
      .. "OR total_size >= 123456789012345",
    stmt = {
      columns = { "id", "num_files", "total_size" },
      where = {
        op = "or",
        args = {
          { op = "=", column = "num_files", value = "11" },
          { op = ">=", column = "total_size", value = 123456789012345 },
        },
      },
    },
    expected = lines {
      "33980d58-9595-47b7-ae9e-8a04f6b5def4\t11\t7689",
      "e2678baf-e4c0-4cbb-8b99-9689fe435d7b\t11\t9307",
      "c1\t5\t123456789012345",
      "rc\t11\t9307",
      "rr\t11\t9307",
    },
  },
  {
    sql = "SELECT id FROM t WHERE id NOT LIKE '%-%' AND status NOT IN "
      .. "('RESTORING', 'BACKUP_CANCELLED') ORDER BY id DESC LIMIT 3",
    stmt = {
      columns = { "id" },
      where = {
        op = "and",
        args = {
          { op = "not like", column = "id", value = "%-%" },
          {
            op = "not in",
            column = "status",
            values = { "RESTORING", "BACKUP_CANCELLED" },
          },
        },
      },
      order_by = { { column = "id", desc = true } },
      limit = 3,
    },
    expected = lines {
      "rc",
      "r9",
      "my id",
    },
  },
  {
    sql = "SELECT id, end_time FROM t WHERE end_time = 0",
    stmt = {
      columns = { "id", "end_time" },
      where = { op = "=", column = "end_time", value = 0 },
    },
    expected = lines {
      "c1\t1970-01-01 00:00:00.000000",
      "rr\t1970-01-01 00:00:00.000000",
    },
  },
  {
    sql = "SELECT id FROM t WHERE status = 1 OR (files_read <> 0 AND "
      .. "bytes_read <= 10)",
    stmt = {
      columns = { "id" },
      where = {
        op = "or",
        args = {
          { op = "=", column = "status", value = 1 },
          {
            op = "and",
            args = {
              { op = "<>", column = "files_read", value = 0 },
              { op = "<=", column = "bytes_read", value = 10 },
            },
          },
        },
      },
    },
    expected = lines {
      "33980d58-9595-47b7-ae9e-8a04f6b5def4",
      "my id",
      "rc",
    },
  },
  {
    sql = "SELECT id FROM t WHERE error LIKE '%x\\\\y%' OR error LIKE "
      .. "'%\\\\0%'",
    stmt = {
      columns = { "id" },
      where = {
        op = "or",
        args = {
          { op = "like", column = "error", value = "%x\\y%" },
          { op = "like", column = "error", value = "%\\0%" },
        },
      },
    },
    expected = lines {
      "f1",
    },
  },
  {
    sql = "SELECT id, status FROM t WHERE id = 'nope' FORMAT TSVWithNames",
    stmt = {
      columns = { "id", "status" },
      where = { op = "=", column = "id", value = "nope" },
      format = "TSVWithNames",
    },
    expected = lines {
      "id\tstatus",
    },
  },
  {
    sql = "SELECT id, status FROM t WHERE id = 'nope' FORMAT CSVWithNames",
    stmt = {
      columns = { "id", "status" },
      where = { op = "=", column = "id", value = "nope" },
      format = "CSVWithNames",
    },
    expected = lines {
      "\"id\",\"status\"",
    },
  },
  {
    sql = "SELECT id, status FROM t WHERE id = 'nope' FORMAT Vertical",
    stmt = {
      columns = { "id", "status" },
      where = { op = "=", column = "id", value = "nope" },
      format = "Vertical",
    },
    expected = "",
  },
  {
    sql = "SELECT id, status FROM t WHERE id = 'nope' FORMAT JSONEachRow",
    stmt = {
      columns = { "id", "status" },
      where = { op = "=", column = "id", value = "nope" },
      format = "JSONEachRow",
    },
    expected = "",
  },
  {
    sql = "SELECT id, status FROM t LIMIT 0",
    stmt = { columns = { "id", "status" }, limit = 0 },
    expected = "",
  },
  {
    sql = "SELECT arrayJoin([999999, 1000000, 1000001, 1125000, 2625000, "
      .. "123456789012345, 999999999999999, 100000000000000000, "
      .. "100000000000000001, 4611686018427387904]::Array(UInt64)) AS "
      .. "total_size, 'x' AS s FORMAT Vertical",
    stmt = { columns = { "total_size", "s" }, format = "Vertical" },
    numbers = {
      999999,
      1000000,
      1000001,
      1125000,
      2625000,
      123456789012345,
      999999999999999,
      100000000000000000,
      100000000000000001,
      4611686018427387904,
    },
    expected = lines {
      "Row 1:",
      "──────",
      "total_size: 999999",
      "s:          x",
      "",
      "Row 2:",
      "──────",
      "total_size: 1000000",
      "s:          x",
      "",
      "Row 3:",
      "──────",
      "total_size: 1000001 -- 1.00 million",
      "s:          x",
      "",
      "Row 4:",
      "──────",
      "total_size: 1125000 -- 1.13 million",
      "s:          x",
      "",
      "Row 5:",
      "──────",
      "total_size: 2625000 -- 2.63 million",
      "s:          x",
      "",
      "Row 6:",
      "──────",
      "total_size: 123456789012345 -- 123.46 trillion",
      "s:          x",
      "",
      "Row 7:",
      "──────",
      "total_size: 999999999999999 -- 1000.00 trillion",
      "s:          x",
      "",
      "Row 8:",
      "──────",
      "total_size: 100000000000000000 -- 100.00 quadrillion",
      "s:          x",
      "",
      "Row 9:",
      "───────",
      "total_size: 100000000000000001 -- 100.00 quadrillion",
      "s:          x",
      "",
      "Row 10:",
      "───────",
      "total_size: 4611686018427387904",
      "s:          x",
    },
  },
}


local function run(stmt, rows, options)
  return query.run(stmt, rows or ROWS, status.COLUMNS,
    options or { utc = true })
end


describe("query.run output, compared with ClickHouse 26.5", function()
  after_each(function()
    query.VERTICAL_MAX_ROWS = 1000
  end)

  for _, case in ipairs(CASES) do
    it(case.sql, function()
      local rows, columns = ROWS, status.COLUMNS
      if case.numbers then
        rows = {}
        for i, n in ipairs(case.numbers) do
          rows[i] = { total_size = n, s = "x" }
        end
        columns = {
          { name = "total_size", type = "UInt64" },
          { name = "s", type = "String" },
        }
      end
      query.VERTICAL_MAX_ROWS = case.max_rows or 1000
      local text, err = query.run(case.stmt, rows, columns, { utc = true })
      assert.is_nil(err)
      assert.equal(case.expected, text)
    end)
  end
end)


describe("query.run", function()
  it("defaults to TSV and reads format names in any case", function()
    local stmt = { columns = { "id" }, limit = 1 }
    local tsv = "33980d58-9595-47b7-ae9e-8a04f6b5def4\n"
    assert.equal(tsv, run(stmt))
    stmt.format = "tsv"
    assert.equal(tsv, run(stmt))
    stmt.format = "jsonlines"
    assert.equal("{\"id\":\"33980d58-9595-47b7-ae9e-8a04f6b5def4\"}\n",
      run(stmt))
    assert.is_true(query.has_format("TabSeparatedWithNames"))
    assert.is_false(query.has_format("Pretty"))
  end)

  it("refuses an unknown format", function()
    local text, err = run({ columns = "*", format = "Pretty" })
    assert.is_nil(text)
    assert.equal("unknown format 'Pretty'", err)
  end)

  it("refuses an unknown column wherever it appears, naming the columns",
    function()
      local columns = "columns: id, name, base_backup_name, query_id, status, "
        .. "error, start_time, end_time, num_files, total_size, num_entries, "
        .. "uncompressed_size, compressed_size, files_read, bytes_read"
      local stmts = {
        { columns = { "id", "nope" } },
        { columns = "*", where = { op = "and", args = {
          { op = "=", column = "id", value = "x" },
          { op = "not", arg = { op = "in", column = "nope", values = {} } },
        } } },
        { columns = "*", order_by = { { column = "nope" } } },
      }
      for _, stmt in ipairs(stmts) do
        local text, err = run(stmt)
        assert.is_nil(text)
        assert.equal("unknown column 'nope' in system.backups (" .. columns
          .. ")", err)
        -- checked even when there is no row to look at
        text = run(stmt, {})
        assert.is_nil(text)
      end
    end)

  it("refuses literals that do not fit the column, as ClickHouse does",
    function()
      local cases = {
        { { op = "!=", column = "status", value = "bogus" },
          "unknown value 'bogus' for column 'status' (expected one of "
          .. "CREATING_BACKUP, BACKUP_CREATED, BACKUP_FAILED, RESTORING, "
          .. "RESTORED, RESTORE_FAILED, BACKUP_CANCELLED, RESTORE_CANCELLED)" },
        { { op = "=", column = "id", value = 5 },
          "cannot compare String column 'id' with 5" },
        { { op = "=", column = "num_files", value = "x" },
          "cannot convert 'x' to UInt64 for column 'num_files'" },
        { { op = ">", column = "start_time", value = "garbage" },
          "cannot convert 'garbage' to DateTime64(6) for column 'start_time'" },
        { { op = "like", column = "num_files", value = "1%" },
          "LIKE needs a String column: 'num_files' is UInt64" },
        { { op = "like", column = "error", value = "a\\" },
          "invalid escape sequence at the end of LIKE pattern 'a\\'" },
        { { op = "~", column = "id", value = "x" },
          "unsupported operator '~'" },
      }
      for _, case in ipairs(cases) do
        local text, err = run({ columns = "*", where = case[1] })
        assert.is_nil(text)
        assert.equal(case[2], err)
      end
    end)

  it("refuses a negative LIMIT", function()
    local text, err = run({ columns = "*", limit = -1 })
    assert.is_nil(text)
    assert.equal("bad LIMIT -1", err)
  end)

  it("raises on misuse", function()
    assert.has_error(function() query.run(nil, {}, status.COLUMNS) end)
    assert.has_error(function()
      query.run({ columns = "*" }, {},
        { { name = "x", type = "Map(String, UInt64)" } })
    end)
  end)

  it("matches LIKE as ClickHouse does", function()
    -- each was checked with SELECT '<subject>' LIKE '<pattern>'
    local cases = {
      { "é", "_", true },
      { "a%b", "a\\%b", true },
      { "axb", "a\\%b", false },
      { "a_b", "a\\_b", true },
      { "a\\b", "a\\\\b", true },
      { "a\\b", "a\\b", true },    -- \ before another character stays
      { "ab", "a\\b", false },
      { "a\nb", "a_b", true },
      { "a\nb", "a%", true },
      { "", "%", true },
      { "", "_", false },
      { "abcbc", "a%bc", true },
      { "abcbd", "a%bc", false },
      { "xaaab", "%a%ab", true },
      { "ABC", "abc", false },
    }
    for _, case in ipairs(cases) do
      local rows = { { id = case[1] } }
      local text = run({ columns = { "id" }, format = "TSVRaw",
        where = { op = "like", column = "id", value = case[2] } }, rows)
      assert.equal(case[3] and case[1] .. "\n" or "", text,
        case[1] .. " LIKE " .. case[2])
    end
  end)

  it("formats and reads DateTime64 in local time by default", function()
    local local_epoch = os.date("%Y-%m-%d %H:%M:%S", 0) .. ".000000"
    assert.equal(local_epoch, query.format_time(0, 6))
    assert.equal("1970-01-01 00:00:00.000000", query.format_time(0, 6, true))
    assert.equal("2026-11-25 07:30:56.561697",
      query.format_time(1795591856561697, 6, true))
    local start = os.date("%Y-%m-%d %H:%M:%S", 1795591856) .. ".561697"
    local stmt = { columns = { "id", "start_time", "end_time" },
      where = { op = "=", column = "start_time", value = start } }
    assert.equal("33980d58-9595-47b7-ae9e-8a04f6b5def4\t" .. start .. "\t"
      .. os.date("%Y-%m-%d %H:%M:%S", 1795591856) .. ".566220\n",
      query.run(stmt, ROWS, status.COLUMNS))
    stmt.where = { op = "=", column = "end_time", value = 0 }
    stmt.columns = { "end_time" }
    assert.equal(local_epoch .. "\n" .. local_epoch .. "\n",
      query.run(stmt, ROWS, status.COLUMNS))
  end)

  it("keeps the input order of rows that sort equal", function()
    local stmt = { columns = { "id" }, order_by = { { column = "name" } } }
    -- byte order: "Disk('backups', 'b%')" < "Disk('backups', 'b1')"
    assert.equal(lines {
      "x_cancel", "33980d58-9595-47b7-ae9e-8a04f6b5def4", "f1", "rc", "rr",
      "my id", "e2678baf-e4c0-4cbb-8b99-9689fe435d7b", "r9", "c1",
    }, run(stmt))
  end)
end)
