/* See helper_user.h. */
#include "approvald/helper_user.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include "p11gate/log.h"

int p11g_helper_drop_root(void)
{
	if (geteuid() != 0)
		return 0;
	struct passwd *pw = getpwnam("nobody");
	uid_t uid = pw ? pw->pw_uid : 65534;
	gid_t gid = pw ? pw->pw_gid : 65534;
	if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 ||
	    setresuid(uid, uid, uid) < 0) {
		p11g_error("cannot give up root: %m");
		return -1;
	}
	return 0;
}
