"""Storage by area. `bot.storage` is the entry point: it opens the database, migrates it and hands
out transactions; each module here is one area's statements, reached as an attribute of a
transaction (`tx.posts`, `tx.shifts`, `tx.delivery`, `tx.privacy`, `tx.settings`), returning
typed rows."""
