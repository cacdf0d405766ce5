"""Getting the inputs: the mirror client, fetching and the content-addressed cache, the resolved
inputs, `.dep` dependency resolution, reading official ISOs."""
