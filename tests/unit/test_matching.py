from datetime import UTC, datetime, timedelta

from bot.matching import find_matches
from bot.models import Category, Post, PostKind, PostStatus, Urgency

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def post(id, kind=PostKind.OFFER, author="@b:x", urgency=Urgency.WHENEVER, age_h=0,
         category=Category.FOOD, status=PostStatus.OPEN, room="!r:x"):
    return Post(id=id, room_id=room, number=id, kind=kind, author=author, category=category,
                urgency=urgency, text=f"post {id}", status=status,
                created_at=T0 - timedelta(hours=age_h))


NEW = post(100, kind=PostKind.NEED, author="@a:x")


def test_ranks_urgent_first_then_oldest_then_id():
    candidates = [post(1, age_h=1), post(2, age_h=5), post(3, urgency=Urgency.TODAY),
                  post(4, urgency=Urgency.THIS_WEEK, age_h=2), post(5, age_h=5)]
    assert [m.other.id for m in find_matches(NEW, candidates, 10)] == [3, 4, 2, 5, 1]


def test_keeps_only_open_opposite_kind_same_room_and_category_not_own():
    candidates = [
        post(1), post(2, kind=PostKind.NEED), post(3, author="@a:x"),
        post(4, category=Category.TOOLS), post(5, status=PostStatus.CLAIMED),
        post(6, room="!other:x"),
    ]
    assert [m.other.id for m in find_matches(NEW, candidates, 10)] == [1]


def test_limit_caps_the_announcements():
    candidates = [post(i, age_h=i) for i in range(1, 8)]
    assert [m.other.id for m in find_matches(NEW, candidates, 3)] == [7, 6, 5]
    assert find_matches(NEW, candidates, 0) == []
