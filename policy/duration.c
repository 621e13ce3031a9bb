/* Durations ("90s", "15m", "24h", "7d"): policy files, the config file and the CLI parse them,
 * so this lives in the wire library, which every binary links. */
#include "p11gate/common.h"

#define DURATION_MAX (10 * 365 * 86400LL)

int64_t p11g_duration_parse(const char *s)
{
	int64_t v = 0, unit;
	size_t i = 0;

	if (!s || s[0] < '0' || s[0] > '9')
		return -1;
	for (; s[i] >= '0' && s[i] <= '9'; i++) {
		v = v * 10 + (s[i] - '0');
		if (v > DURATION_MAX)
			return -1;
	}
	switch (s[i]) {
	case 's':
		unit = 1;
		break;
	case 'm':
		unit = 60;
		break;
	case 'h':
		unit = 3600;
		break;
	case 'd':
		unit = 86400;
		break;
	default:
		return -1;
	}
	if (s[i + 1] != '\0' || v == 0 || v > DURATION_MAX / unit)
		return -1;
	return v * unit;
}
