"""The orchestration one command calls: build, publish (and roll back), the ISO, the files written
beside them. The only place the build side and the serving side meet."""
