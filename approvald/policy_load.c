/* Reading policy files and directories for approvald: bytes to policy/ (issue #17). */
