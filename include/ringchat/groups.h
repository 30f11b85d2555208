/*
 * groups.h - GROUP_CREATE, _DISSOLVE, _JOIN, _QUIT, _MEMBERS, _LIST.
 * Handlers follow session.h.
 */
#ifndef RINGCHAT_GROUPS_H
#define RINGCHAT_GROUPS_H

struct req;

void groups_create(struct req *r);
void groups_dissolve(struct req *r);
void groups_join(struct req *r);
void groups_quit(struct req *r);
void groups_members(struct req *r);
void groups_list(struct req *r);

#endif
